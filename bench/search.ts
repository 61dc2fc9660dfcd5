/**
 * Search benchmark (`npm run bench:search`). Prints numbers; asserts nothing.
 *
 *  1. (Re)creates the database fhir_bench_search on the local Postgres, starts the real server
 *     and creates the tenant `bench` (helpers shared with bench/rest.ts in bench/lib.ts).
 *  2. Builds a large tenant by cloning the Synthea smart-on-fhir-2019 patient bundles: every clone
 *     gets fresh urn:uuid fullUrls (references rewritten consistently), a fresh Patient name,
 *     identifiers and a slightly shifted birthDate. The Practitioners/Organizations are loaded
 *     once and referenced by id. Then BENCH_SEARCH_APPOINTMENTS Appointments (Patient +
 *     Practitioner, spread over 2021). All through HTTP transaction Bundles. VACUUM ANALYZE.
 *  3. autocannon per search query, values drawn from the loaded data per request.
 *  4. EXPLAIN (ANALYZE, BUFFERS) of the SQL the server runs for each query (built by the
 *     server's own search code, run as fhir_app in a tenant transaction); prints the slowest.
 *  5. Writes bench/out/search-<timestamp>.json.
 *
 * Only 127.0.0.1 / localhost is contacted. See bench/README.md for the knobs.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import knexFactory from 'knex';
import pg from 'pg';
import type { Bundle, BundleEntry, Patient } from 'fhir/r4';
import { ensureTenant, setTenantSettings } from '../server/http/tenants';
import { search } from '../server/search/search';
import type { Tx } from '../server/db/tenant-tx';
import {
  AcOptions,
  cannon,
  cpuDelta,
  cpuProbe,
  CpuProbe,
  dbParts,
  f,
  FHIR_HEADERS,
  authorizeBench,
  BENCH_TENANT_SETTINGS,
  intEnv,
  log,
  OUT_DIR,
  percentile,
  postgresInfo,
  recreateDatabase,
  ROOT,
  runCommand,
  runMain,
  safeUrl,
  startServer,
  table,
} from './lib';

// ---- settings ------------------------------------------------------------------------------

const TENANT = 'bench';
const S = {
  databaseUrl: process.env.BENCH_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/fhir_bench_search',
  fixtures: process.env.BENCH_SEARCH_FIXTURES || path.resolve(ROOT, '../shared/fixtures/synthea/smart-on-fhir-2019'),
  patients: Math.max(1, intEnv('BENCH_SEARCH_PATIENTS', 100_000)),
  appointments: intEnv('BENCH_SEARCH_APPOINTMENTS', 5000),
  /** At most this many resources per patient clone (0 = the whole Synthea record, ~289). */
  perPatient: intEnv('BENCH_SEARCH_PER_PATIENT', 0),
  /** Patient clones per transaction Bundle. */
  patientsPerBundle: Math.max(1, intEnv('BENCH_SEARCH_PATIENTS_PER_BUNDLE', 1)),
  loadConcurrency: Math.max(1, intEnv('BENCH_LOAD_CONCURRENCY', 4)),
  seconds: Math.max(1, intEnv('BENCH_SECONDS', 15)),
  warmup: intEnv('BENCH_WARMUP', 2),
  connections: Math.max(1, intEnv('BENCH_CONNECTIONS', 20)),
  webConcurrency: Math.max(1, intEnv('WEB_CONCURRENCY', 2)),
  queries: (process.env.BENCH_SEARCH_QUERIES || '').split(',').map((s) => s.trim()).filter(Boolean),
  seed: intEnv('BENCH_SEED', 42),
  timeout: intEnv('BENCH_TIMEOUT', 3600),
  /** 1: keep the database and data of the previous run (no recreate, no load; see README). */
  reuse: process.env.BENCH_SEARCH_REUSE === '1',
  cpuProfDir: process.env.BENCH_CPU_PROF || '',
};

// ---- deterministic randomness --------------------------------------------------------------

function mulberry32(a: number) {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = mulberry32(S.seed);
const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)];
const uuid = () => crypto.randomUUID();

const FAMILIES = `Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold Pierce Vazquez Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong Hudson Carroll Lane Riley Andrews Alvarado Ray Delgado Berry Perkins Hoffman Johnston Matthews Pena Richards Contreras Willis Carpenter Lawrence Sandoval Guerrero George Chapman Rios Estrada Ortega Watkins Greene Nunez Wheeler Valdez Harper Burke Larson Santiago Maldonado Morrison Franklin Carlson Austin Dominguez Carr Lawson Jacobs Obrien Lynch Singh Vega Bishop Montgomery Oliver Jensen Harvey Williamson Gilbert Dean Sims Espinoza Howell Li Wong Reid Hanson Le McCoy Garrett Burton Fuller Wang Weber Welch Rojas Lucas Marquez Fields Park Yang Little Banks Padilla Day Walsh Bowman Schultz Luna Fowler Mejia Davidson Acosta Brewer May Holland Juarez Newman Pearson Curtis Cortez Douglas Schneider Joseph Barrett Navarro Figueroa Keller Avila Wade Molina Stanley Hopkins Campos Barnett Bates Chambers Caldwell Beck Lambert Miranda Byrd Craig Ayala Lowe Frazier Powers Neal Leonard Gregory Carrillo Sutton Fleming Rhodes Shelton Schwartz Norris Jennings Watts Duran Walters Cohen McDaniel Moran Parks Steele Vaughn Becker Holt Deleon Barker Terry Hale Leon Hail Benson Haynes Horton Miles Lyons Pham Graves Bush Thornton Wolfe Warner Cabrera McKinney Mann Zimmerman Dawson Lara Fletcher Page McCarthy Love Robles Cervantes Solis Erickson Reeves Chang Klein Salinas Fuentes Baldwin Daniel Simon Velasquez Hardy Higgins Aguirre Lin Cummings Chandler Sharp Barber Bowen Ochoa Dennis Robbins Liu Ramsey Francis Griffith Paul Blair Oconnor Cardenas Pacheco Cross Calderon Quinn Moss Swanson Chan Rivas Khan Rodgers Serrano Fitzgerald Rosales Stevenson Christensen Manning Gill Curry McLaughlin Harmon McGee Gross Doyle Garner Newton Burgess Reese Walton Blake Trujillo Adkins Brady Goodman Roman Webster Goodwin Fischer Huang Potter Delacruz Montoya Todd Wu Hines Mullins Castaneda Malone Cannon Tate Mack Sherman Hubbard Hodges Zhang Guerra Wolf Valencia Saunders Franco Rowe Gallagher Farmer Hammond Hampton Townsend Ingram Wise Gallegos Clarke Barton Schroeder Maxwell Waters Logan Camacho Strickland Norman Person Colon Parsons Frank Harrington Glover Osborne Buchanan Casey Floyd Patton Ibarra Ball Tyler Suarez Bowers Orozco Salas Cobb Gibbs Andrade Bauer Conner Moody Escobar McGuire Lloyd Mueller Hartman French Kramer McBride Pope Lindsey Velazquez Norton McCormick Sparks Flynn Yates Hogan Marsh Macias Villanueva Zamora Pratt Stokes Owen Ballard Lang Brock Villarreal Charles Drake Barrera Cain Patrick Pineda Burnett Mercado Santana Shepherd Bautista Ali Shaffer Lamb Trevino McKenzie Hess Beil Olsen Cochran Morton Nash Wilkins Petersen Briggs Shah Roth Nicholson Holloway Lozano Rangel Flowers Hoover Short Arias Mora Valenzuela Bryan Meyers Weiss Underwood Bass Greer Summers Houston Carson Morrow Clayton Whitaker Decker Yoder Collier Zuniga Carey Wilcox Melendez Poole Roberson Larsen Conley Davenport Copeland Massey Lam Huff Rocha Cameron Jefferson Hood Monroe Anthony Pittman Huynh Randall Singleton Kirk Combs Mathis Christian Skinner Bradford Richard Galvan Wall Boone Kirby Wilkinson Bridges Bruce Atkinson Velez Meza Roy Vincent York Hodge Villa Abbott Allison Tapia Gates Chase Sosa Sweeney Farrell Wyatt Dalton Horn Barron Phelps Yu Dickerson Heath Foley Atkins Mathews Bonilla Acevedo Benitez Zavala Hensley Glenn Cisneros Harrell Shields Rubio Huber Choi Kirkland Frey Sheppard Strong`.split(/\s+/);
const GIVEN_F = 'Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty Sandra Margaret Ashley Kimberly Emily Donna Michelle Carol Amanda Melissa Deborah Stephanie Rebecca Sharon Laura Cynthia Dorothy Amy Kathleen Angela Shirley Emma Brenda Pamela Nicole Anna Samantha'.split(' ');
const GIVEN_M = 'James Robert John Michael David William Richard Joseph Thomas Christopher Charles Daniel Matthew Anthony Mark Donald Steven Andrew Paul Joshua Kenneth Kevin Brian George Timothy Ronald Jason Edward Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon'.split(' ');

// ---- fixtures ------------------------------------------------------------------------------

const SHARED_TYPES = new Set(['Practitioner', 'Organization']);
const UUID_RE = /urn:uuid:([0-9a-fA-F-]{36})/g;

interface ObsSample {
  code: string; // system|code
  date: string; // YYYY-MM-DD
}
interface Template {
  file: string;
  /** The bundle without the shared entries, serialised. */
  json: string;
  entries: number;
  patientIndex: number;
  birthDate: string;
  gender: string;
  obs: ObsSample[];
}

function readTemplates(dir: string) {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json.gz') || f.endsWith('.json')).sort();
  if (!files.length) throw new Error(`no bundles in ${dir}`);
  const shared = new Map<string, BundleEntry>(); // uuid -> entry
  const templates: Template[] = [];
  for (const file of files) {
    const buf = fs.readFileSync(path.join(dir, file));
    const b = JSON.parse((file.endsWith('.gz') ? zlib.gunzipSync(buf) : buf).toString('utf8')) as Bundle;
    if (b.type !== 'transaction') continue;
    const own: BundleEntry[] = [];
    for (const e of b.entry ?? []) {
      const t = e.resource?.resourceType ?? '';
      if (SHARED_TYPES.has(t)) shared.set(e.fullUrl!.slice('urn:uuid:'.length), e);
      else own.push(e);
    }
    if (S.perPatient > 0) own.splice(0, own.length, ...trimmed(own, S.perPatient, shared));
    const patientIndex = own.findIndex((e) => e.resource?.resourceType === 'Patient');
    if (patientIndex < 0) continue;
    const p = own[patientIndex].resource as Patient;
    const obs: ObsSample[] = [];
    for (const e of own) {
      const r = e.resource as any;
      if (r?.resourceType !== 'Observation') continue;
      const c = r.code?.coding?.[0];
      const d: string | undefined = r.effectiveDateTime ?? r.effectivePeriod?.start;
      if (c?.system && c.code && d) obs.push({ code: `${c.system}|${c.code}`, date: d.slice(0, 10) });
    }
    templates.push({
      file,
      json: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: own }),
      entries: own.length,
      patientIndex,
      birthDate: p.birthDate ?? '1970-01-01',
      gender: p.gender ?? 'unknown',
      obs,
    });
  }
  return { templates, shared };
}

/**
 * The first `max` entries of a patient's record (the Patient always) whose references all stay
 * inside what is kept: Synthea writes a record in time order, so this is its earliest part.
 */
function trimmed(own: BundleEntry[], max: number, shared: Map<string, BundleEntry>): BundleEntry[] {
  const kept: BundleEntry[] = [];
  const keptIds = new Set<string>();
  const patient = own.find((e) => e.resource?.resourceType === 'Patient');
  if (patient) {
    kept.push(patient);
    keptIds.add(patient.fullUrl!.slice('urn:uuid:'.length));
  }
  for (const e of own) {
    if (kept.length >= max) break;
    if (e === patient) continue;
    const self = e.fullUrl?.slice('urn:uuid:'.length);
    const refs = [...JSON.stringify(e.resource).matchAll(UUID_RE)].map((m) => m[1]).filter((u) => u !== self && !shared.has(u));
    if (!refs.every((u) => keptIds.has(u))) continue;
    kept.push(e);
    if (self) keptIds.add(self);
  }
  return kept;
}

/** A clone of a template: fresh urn:uuids, shared resources by id, new name/identifiers/birthDate. */
function cloneBundle(t: Template, sharedRefs: Map<string, string>, n: number) {
  const local = new Map<string, string>();
  const json = t.json.replace(UUID_RE, (_m, u: string) => {
    const s = sharedRefs.get(u);
    if (s) return s;
    let v = local.get(u);
    if (!v) local.set(u, (v = uuid()));
    return `urn:uuid:${v}`;
  });
  const b = JSON.parse(json) as Bundle;
  const p = b.entry![t.patientIndex].resource as Patient;
  const family = pick(FAMILIES);
  const given = pick(t.gender === 'female' ? GIVEN_F : GIVEN_M);
  const mrn = uuid();
  p.name = [{ use: 'official', family, given: [given] }];
  p.identifier = (p.identifier ?? []).map((id, k) => {
    if (id.system === 'http://hospital.smarthealthit.org' || id.system === 'https://github.com/synthetichealth/synthea') return { ...id, value: mrn };
    if (id.system === 'http://hl7.org/fhir/sid/us-ssn') return { ...id, value: `999-${String(n % 100).padStart(2, '0')}-${String(Math.floor(n / 100) % 10000).padStart(4, '0')}` };
    return { ...id, value: `${id.value ?? 'X'}-${n}-${k}` };
  });
  const bd = new Date(`${t.birthDate}T00:00:00Z`);
  bd.setUTCDate(bd.getUTCDate() + Math.floor(rnd() * 365) - 182);
  p.birthDate = bd.toISOString().slice(0, 10);
  return { entries: b.entry!, family, mrn, birthDate: p.birthDate };
}

// ---- HTTP ----------------------------------------------------------------------------------

let networkRetries = 0;

async function postBundle(base: string, body: string, what: string): Promise<Bundle> {
  let r: Response;
  for (let attempt = 1; ; attempt++) {
    try {
      r = await fetch(base, {
        method: 'POST',
        headers: { ...FHIR_HEADERS, Prefer: 'return=minimal' },
        body,
        signal: AbortSignal.timeout(300_000),
      });
      break;
    } catch (e) {
      // A reused keep-alive socket closed by the server at the same moment fails before the request
      // reaches it ("other side closed"); retried twice. (A retry after a commit would duplicate it.)
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      if (attempt > 2 || (e as Error).name === 'TimeoutError') throw new Error(`load: ${what}: ${(e as Error).message} (${cause?.code ?? ''} ${cause?.message ?? ''})`);
      networkRetries++;
      log(`  ${what}: ${(e as Error).message} (${cause?.code ?? ''} ${cause?.message ?? ''}); retrying`);
      await new Promise((res) => setTimeout(res, 500));
    }
  }
  const text = await r.text();
  if (r.status !== 200) throw new Error(`load: ${what} answered ${r.status}: ${text.slice(0, 800)}`);
  return JSON.parse(text) as Bundle;
}

const locationId = (e: BundleEntry | undefined) => /^[A-Za-z]+\/([^/]+)/.exec(e?.response?.location ?? '')?.[1];

interface LoadedPatient {
  id: string;
  family: string;
  mrn: string;
  birthDate: string;
  template: number;
}

async function load(base: string) {
  const { templates, shared } = readTemplates(S.fixtures);
  log(`fixtures: ${templates.length} patient bundles (${templates.reduce((a, t) => a + t.entries, 0)} entries without the ${shared.size} shared Practitioner/Organization)`);

  // Shared Practitioners/Organizations once; their urn:uuids become Type/id in every clone.
  const sharedEntries = [...shared.entries()];
  const sharedOut = await postBundle(base, JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: sharedEntries.map(([, e]) => e) }), 'shared bundle');
  const sharedRefs = new Map<string, string>();
  const practitioners: string[] = [];
  sharedEntries.forEach(([u, e], i) => {
    const id = locationId(sharedOut.entry?.[i]);
    if (!id) throw new Error(`load: no location for shared entry ${i}`);
    sharedRefs.set(u, `${e.resource!.resourceType}/${id}`);
    if (e.resource!.resourceType === 'Practitioner') practitioners.push(id);
  });

  const patients: LoadedPatient[] = [];
  let next = 0;
  let resources = sharedEntries.length;
  const t0 = performance.now();
  let lastReport = t0;
  const worker = async () => {
    for (;;) {
      if (next >= S.patients) return;
      // BENCH_SEARCH_PATIENTS_PER_BUNDLE clones in one transaction Bundle
      const group: Array<{ n: number; ti: number; offset: number; c: ReturnType<typeof cloneBundle> }> = [];
      const entry: BundleEntry[] = [];
      while (group.length < S.patientsPerBundle && next < S.patients) {
        const n = next++;
        const ti = n % templates.length;
        const c = cloneBundle(templates[ti], sharedRefs, n);
        group.push({ n, ti, offset: entry.length, c });
        entry.push(...c.entries);
      }
      const first = group[0];
      const out = await postBundle(base, JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }), `patient bundle ${first.n} (${templates[first.ti].file}${group.length > 1 ? ` and ${group.length - 1} more` : ''})`);
      for (const g of group) {
        const id = locationId(out.entry?.[g.offset + templates[g.ti].patientIndex]);
        if (!id) throw new Error(`load: no Patient location in bundle ${g.n}`);
        patients.push({ id, family: g.c.family, mrn: g.c.mrn, birthDate: g.c.birthDate, template: g.ti });
        resources += templates[g.ti].entries;
      }
      const now = performance.now();
      if (now - lastReport > 10_000) {
        lastReport = now;
        const s = (now - t0) / 1000;
        log(`  ${patients.length}/${S.patients} patients, ${resources} resources, ${(resources / s).toFixed(0)} resources/s`);
      }
    }
  };
  await Promise.all(Array.from({ length: S.loadConcurrency }, worker));
  const patientSeconds = (performance.now() - t0) / 1000;
  const patientResources = resources;

  // Appointments: a Patient and a Practitioner each, booked, 30 minutes, spread over 2021, no
  // practitioner booked twice at one time.
  const appointments: Array<{ practitioner: string; start: string }> = [];
  const yearStart = Date.UTC(2021, 0, 1);
  const perBundle = 200;
  const t1 = performance.now();
  let nextA = 0;
  const aWorker = async () => {
    for (;;) {
      const from = nextA;
      nextA += perBundle;
      if (from >= S.appointments) return;
      const n = Math.min(perBundle, S.appointments - from);
      const entry: BundleEntry[] = [];
      const mine: typeof appointments = [];
      for (let i = 0; i < n; i++) {
        // one practitioner never has two appointments at once (the database refuses overlaps):
        // the k-th appointment goes to practitioner k mod P, at a half hour of 2021 that is a
        // permutation of k div P (7919 is coprime with the 17,520 half hours of the year)
        const k = from + i;
        const start = new Date(yearStart + ((Math.floor(k / practitioners.length) * 7919) % (365 * 48)) * 1800_000);
        const end = new Date(start.getTime() + 1800_000);
        const pr = practitioners[k % practitioners.length];
        const pa = pick(patients);
        mine.push({ practitioner: pr, start: start.toISOString() });
        entry.push({
          fullUrl: `urn:uuid:${uuid()}`,
          request: { method: 'POST', url: 'Appointment' },
          resource: {
            resourceType: 'Appointment',
            status: 'booked',
            description: 'Follow-up visit',
            start: start.toISOString(),
            end: end.toISOString(),
            minutesDuration: 30,
            participant: [
              { actor: { reference: `Patient/${pa.id}` }, status: 'accepted' },
              { actor: { reference: `Practitioner/${pr}` }, status: 'accepted' },
            ],
          } as any,
        });
      }
      await postBundle(base, JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }), `appointment bundle at ${from}`);
      appointments.push(...mine);
      resources += n;
    }
  };
  await Promise.all(Array.from({ length: Math.min(S.loadConcurrency, Math.ceil(S.appointments / perBundle) || 1) }, aWorker));
  const apptSeconds = (performance.now() - t1) / 1000;
  const seconds = (performance.now() - t0) / 1000;
  return { templates, practitioners, patients, appointments, resources, seconds, patientSeconds, patientResources, apptSeconds, sharedResources: sharedEntries.length };
}

/**
 * BENCH_SEARCH_REUSE=1 without a saved load file (a database loaded by an older bench): what the
 * queries are drawn from, read back from the database (each Patient's template by its address).
 */
async function readBack(databaseUrl: string): Promise<Loaded> {
  const { templates } = readTemplates(S.fixtures);
  const addressOf = (t: Template) => ((JSON.parse(t.json) as Bundle).entry![t.patientIndex].resource as Patient).address ?? null;
  const byAddress = new Map(templates.map((t, i) => [JSON.stringify(addressOf(t)), i]));
  const c = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    const pr = await c.query(`SELECT id FROM resources WHERE tenant_id = $1 AND res_type = 'Practitioner' AND NOT deleted`, [TENANT]);
    const pa = await c.query(
      `SELECT id, content::text AS c FROM resources WHERE tenant_id = $1 AND res_type = 'Patient' AND NOT deleted`,
      [TENANT],
    );
    const patients: LoadedPatient[] = [];
    for (const row of pa.rows as Array<{ id: string; c: string }>) {
      const r = { id: row.id, c: JSON.parse(row.c) as Patient };
      const template = byAddress.get(JSON.stringify(r.c.address ?? null));
      if (template === undefined) continue;
      const mrn = r.c.identifier?.find((i) => i.system === 'http://hospital.smarthealthit.org')?.value ?? '';
      patients.push({ id: r.id, family: r.c.name?.[0]?.family ?? '', mrn, birthDate: r.c.birthDate ?? '1970-01-01', template });
    }
    const ap = await c.query(
      `SELECT content::jsonb->>'start' AS start, content::jsonb#>>'{participant,1,actor,reference}' AS pr
         FROM resources WHERE tenant_id = $1 AND res_type = 'Appointment' AND NOT deleted`,
      [TENANT],
    );
    const appointments = (ap.rows as Array<{ start: string; pr: string }>).map((a) => ({ practitioner: a.pr.replace(/^Practitioner\//, ''), start: a.start }));
    const n = await c.query(`SELECT count(*)::int AS n FROM resources WHERE tenant_id = $1`, [TENANT]);
    log(`read back ${patients.length}/${pa.rows.length} patients (template by address), ${appointments.length} appointments`);
    return {
      templates: templates.map((t) => ({ ...t, json: '' })),
      practitioners: (pr.rows as Array<{ id: string }>).map((x) => x.id),
      patients,
      appointments,
      resources: n.rows[0].n,
      seconds: NaN,
      patientSeconds: NaN,
      patientResources: NaN,
      apptSeconds: NaN,
      sharedResources: 0,
    };
  } finally {
    await c.end();
  }
}

// ---- queries -------------------------------------------------------------------------------

type Loaded = Awaited<ReturnType<typeof load>>;
interface Query {
  name: string;
  /** Paths (tenant-relative, e.g. `Patient?family=X`) with values drawn from the loaded data. */
  paths: string[];
}

const q = (v: string) => encodeURIComponent(v);
const addYears = (d: string, y: number) => `${Number(d.slice(0, 4)) + y}${d.slice(4)}`;

function buildQueries(L: Loaded, n = 2000): Query[] {
  const families = [...new Set(L.patients.map((p) => p.family))];
  const withObs = L.patients.filter((p) => L.templates[p.template].obs.length);
  const gen = (fn: () => string) => Array.from({ length: n }, fn);
  const all: Query[] = [
    { name: 'Patient?family', paths: gen(() => `Patient?family=${q(pick(families))}`) },
    { name: 'Patient?identifier', paths: gen(() => `Patient?identifier=${q(`http://hospital.smarthealthit.org|${pick(L.patients).mrn}`)}`) },
    {
      name: 'Patient?birthdate (1 year)',
      paths: gen(() => {
        const y = pick(L.patients).birthDate.slice(0, 4);
        return `Patient?birthdate=ge${y}-01-01&birthdate=lt${Number(y) + 1}-01-01`;
      }),
    },
    {
      name: 'Observation?patient&code&date&_sort',
      paths: gen(() => {
        const p = pick(withObs);
        const o = pick(L.templates[p.template].obs);
        return `Observation?patient=${q(p.id)}&code=${q(o.code)}&date=ge${addYears(o.date, -1)}&_sort=-date&_count=20`;
      }),
    },
    { name: 'Encounter?patient&_revinclude', paths: gen(() => `Encounter?patient=${q(pick(L.patients).id)}&_revinclude=Observation:encounter`) },
    {
      name: 'Appointment?practitioner&date',
      paths: L.appointments.length
        ? gen(() => {
            const a = pick(L.appointments);
            const d = new Date(a.start);
            const lo = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1));
            const hi = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));
            return `Appointment?practitioner=${q(a.practitioner)}&date=ge${lo.toISOString().slice(0, 10)}&date=lt${hi.toISOString().slice(0, 10)}`;
          })
        : [],
    },
    { name: 'Observation?subject:Patient.family', paths: gen(() => `Observation?subject:Patient.family=${q(pick(families))}`) },
  ];
  return all.filter((x) => x.paths.length && (!S.queries.length || S.queries.some((s) => x.name.startsWith(s))));
}

interface QueryResult {
  query: string;
  example: string;
  requests: number;
  rps: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  non2xx: number;
  connErrors: number;
  statusCodes: Record<string, number>;
  emptyShare: number;
  avgBytes: number;
  loadavg: { before: number; after: number };
  cpuMsPerRequest?: { server: number; postgres: number; client: number };
}

const HAS_ENTRY = /"entry"\s*:\s*\[\s*\{/;

async function measure(url: string, query: Query, probe: CpuProbe): Promise<QueryResult> {
  let empty = 0;
  let answered = 0;
  let bytes = 0;
  let counting = false;
  const requests: NonNullable<AcOptions['requests']> = [
    {
      method: 'GET',
      setupRequest: (req: Record<string, unknown>) => ({ ...req, path: `/fhir/${TENANT}/${query.paths[Math.floor(Math.random() * query.paths.length)]}` }),
      onResponse: (status: number, body: string) => {
        if (!counting || status !== 200) return;
        answered++;
        bytes += body.length;
        if (!HAS_ENTRY.test(body)) empty++;
      },
    } as any,
  ];
  const base = { url, connections: S.connections, headers: { Accept: 'application/fhir+json', Authorization: FHIR_HEADERS.Authorization }, requests };
  if (S.warmup > 0) await cannon({ ...base, duration: S.warmup }, false);
  counting = true;
  const loadBefore = os.loadavg()[0];
  const cpu0 = await probe.take();
  const { result, lat, codes } = await cannon({ ...base, duration: S.seconds }, true);
  const cpu1 = await probe.take();
  const sorted = Float64Array.from(lat).sort();
  const non2xx = Object.entries(codes).filter(([c]) => !c.startsWith('2')).reduce((a, [, n]) => a + n, 0);
  const r: QueryResult = {
    query: query.name,
    example: query.paths[0],
    requests: lat.length,
    rps: lat.length / result.duration,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    non2xx,
    connErrors: result.errors,
    statusCodes: codes,
    emptyShare: answered ? empty / answered : NaN,
    avgBytes: answered ? bytes / answered : NaN,
    loadavg: { before: loadBefore, after: os.loadavg()[0] },
    cpuMsPerRequest: lat.length
      ? {
          server: (1000 * cpuDelta(cpu0.server, cpu1.server)) / lat.length,
          postgres: (1000 * cpuDelta(cpu0.postgres, cpu1.postgres)) / lat.length,
          client: (cpu1.client.user - cpu0.client.user + cpu1.client.system - cpu0.client.system) / 1000 / lat.length,
        }
      : undefined,
  };
  log(`${query.name}: ${r.rps.toFixed(0)} req/s, p50 ${r.p50.toFixed(1)} p95 ${r.p95.toFixed(1)} p99 ${r.p99.toFixed(1)} ms, status ${JSON.stringify(codes)}, empty ${(100 * r.emptyShare).toFixed(1)}%`);
  return r;
}

// ---- EXPLAIN -------------------------------------------------------------------------------

/** `?` -> `$n`, as server/db/tenant-tx.ts does. */
const numbered = (sql: string) => {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
};

/**
 * Runs the server's own search() for one path inside a tenant transaction as fhir_app, records
 * every statement it issues, then EXPLAIN (ANALYZE, BUFFERS) each of them with the same values.
 */
async function explain(databaseUrl: string, baseUrl: string, p: string) {
  const [type, qs] = p.split('?');
  const params = [...new URLSearchParams(qs)] as Array<[string, string]>;
  const c = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 10_000 });
  await c.connect();
  const statements: Array<{ sql: string; bindings: unknown[]; ms: number; plan?: string }> = [];
  try {
    await c.query('BEGIN');
    await c.query('SET LOCAL ROLE fhir_app');
    await c.query(`SELECT set_config('app.tenant', $1, true)`, [TENANT]);
    const tx: Tx = {
      tenant: TENANT,
      async raw(sql, bindings = []) {
        const t = performance.now();
        const r = await c.query(numbered(sql), bindings as unknown[]);
        statements.push({ sql, bindings: [...bindings], ms: performance.now() - t });
        return r;
      },
      transaction: (fn) => fn(tx),
    };
    await search(tx, { type, params, baseUrl, strict: false, defaultCount: 50, maxCount: 1000 });
    for (const s of statements) {
      if (/^\s*EXPLAIN/i.test(s.sql)) continue;
      const r = await c.query(`EXPLAIN (ANALYZE, BUFFERS) ${numbered(s.sql)}`, s.bindings as unknown[]);
      s.plan = r.rows.map((x: Record<string, string>) => x['QUERY PLAN']).join('\n');
    }
    await c.query('ROLLBACK');
  } finally {
    await c.end();
  }
  return { path: p, statements };
}

// ---- main ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = new Date();
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const db = dbParts(S.databaseUrl);
  const cpus = os.cpus();
  const git = await runCommand('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], process.env, 10_000).catch(() => undefined);
  const dirty = await runCommand('git', ['-C', ROOT, 'status', '--porcelain', '--', 'server', 'resources', 'migrations'], process.env, 10_000).catch(() => undefined);
  const commit = git?.code === 0 ? `${git.stdout.trim()}${dirty?.stdout.trim() ? ' + uncommitted server changes' : ''}` : 'unknown';
  const environment = {
    commit,
    cores: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    postgres: await postgresInfo(db.adminUrl),
  };
  log(`commit ${commit}; ${environment.cores} cores, node ${environment.node}, ${environment.postgres.version.split(' on ')[0]}`);
  log(`settings: ${JSON.stringify({ ...S, databaseUrl: safeUrl(db.url) })}`);

  const loadFile = path.join(OUT_DIR, `search-load-${db.name}.json`);
  if (S.reuse) {
    log(`reusing database ${db.name} and its data (${fs.existsSync(loadFile) ? path.relative(ROOT, loadFile) : 'read back from the database'})`);
  } else {
    log(`recreating database ${db.name}`);
    await recreateDatabase(db.adminUrl, db.name);
  }
  const server = await startServer(S.databaseUrl, S.webConcurrency, stamp, { logPrefix: 'search-server', cpuProfDir: S.cpuProfDir });
  log(`server ready at ${server.url} (log: ${path.relative(ROOT, server.logFile)})`);
  const owner = knexFactory({ client: 'pg', connection: S.databaseUrl, pool: { min: 0, max: 1 } });
  try {
    await ensureTenant(owner, TENANT, 'Search benchmark tenant', BENCH_TENANT_SETTINGS);
    await setTenantSettings(owner, TENANT, BENCH_TENANT_SETTINGS); // also for a reused database
  } finally {
    await owner.destroy();
  }
  const base = `${server.url}/fhir/${TENANT}`;
  await authorizeBench(server.url, TENANT);

  log(`loading ${S.patients} Synthea patient clones (${S.loadConcurrency} transaction Bundles in flight) + ${S.appointments} Appointments`);
  let L: Loaded;
  const probe = await cpuProbe(db.adminUrl, db.name, server.child.pid!);
  const loadCpu0 = await probe.take();
  if (S.reuse) {
    L = fs.existsSync(loadFile) ? (JSON.parse(fs.readFileSync(loadFile, 'utf8')) as Loaded) : await readBack(S.databaseUrl);
    log(`reused: ${L.patients.length} patients, ${L.resources} resources (load numbers below are those of the run that loaded them)`);
  } else {
    L = await load(base);
    // What the queries are drawn from, for later runs with BENCH_SEARCH_REUSE=1 (no template JSON).
    fs.writeFileSync(loadFile, JSON.stringify({ ...L, templates: L.templates.map((t) => ({ ...t, json: '' })) }));
  }
  const loadCpu1 = await probe.take();
  const perK = (x: number) => (1000 * x) / (L.resources || 1);
  const loadCpu = {
    server: perK(cpuDelta(loadCpu0.server, loadCpu1.server)),
    postgres: perK(cpuDelta(loadCpu0.postgres, loadCpu1.postgres)),
    client: perK((loadCpu1.client.user - loadCpu0.client.user + loadCpu1.client.system - loadCpu0.client.system) / 1e6),
  };
  const rate = L.resources / L.seconds;
  log(`loaded ${L.patients.length} patients, ${L.resources} resources in ${L.seconds.toFixed(1)} s = ${rate.toFixed(0)} resources/s (patient bundles ${(L.patientResources / L.patientSeconds).toFixed(0)}/s, appointments ${(S.appointments / (L.apptSeconds || 1)).toFixed(0)}/s)`);

  const c = new pg.Client({ connectionString: S.databaseUrl, connectionTimeoutMillis: 10_000 });
  await c.connect();
  let vacuumSeconds = 0;
  let dbStats: Record<string, unknown> = {};
  try {
    const t = performance.now();
    // (reused data: the server may just have run new migrations; ANALYZE is enough then)
    await c.query(S.reuse ? 'ANALYZE' : 'VACUUM ANALYZE');
    vacuumSeconds = (performance.now() - t) / 1000;
    const size = await c.query(`SELECT pg_size_pretty(pg_database_size(current_database())) AS s`);
    const counts = await c.query(`SELECT res_type, count(*)::int AS n FROM resources WHERE NOT deleted GROUP BY 1 ORDER BY 2 DESC`);
    const tables = await c.query(
      `SELECT relname, n_live_tup::bigint AS rows, pg_size_pretty(pg_total_relation_size(relid)) AS size FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC LIMIT 10`,
    );
    dbStats = { size: size.rows[0].s, resources: counts.rows, tables: tables.rows };
  } finally {
    await c.end();
  }
  log(`VACUUM ANALYZE: ${vacuumSeconds.toFixed(1)} s; database ${dbStats.size}`);

  const queries = buildQueries(L);
  const results: QueryResult[] = [];
  try {
    for (const query of queries) results.push(await measure(server.url, query, probe));
  } finally {
    await probe.close();
  }

  // EXPLAIN of every query (one drawn example each); the slowest by p95 is printed.
  const explains: Record<string, Awaited<ReturnType<typeof explain>>> = {};
  for (const query of queries) {
    try {
      explains[query.name] = await explain(S.databaseUrl, base, query.paths[1 % query.paths.length]);
    } catch (e) {
      log(`EXPLAIN ${query.name} failed: ${(e as Error).message}`);
    }
  }
  log('stopping server');
  await server.stop();

  // ---- print
  const rows = [['query', 'req/s', 'p50 ms', 'p95 ms', 'p99 ms', 'non-2xx', 'empty', 'p95 ≤ 25 ms']];
  for (const r of results) {
    rows.push([r.query, f(r.rps, 0), f(r.p50, 1), f(r.p95, 1), f(r.p99, 1), `${r.non2xx + r.connErrors}`, `${f(100 * r.emptyShare, 1)}%`, r.p95 <= 25 ? 'met' : 'NOT MET']);
  }
  const slowest = [...results].sort((a, b) => b.p95 - a.p95)[0];
  const lines = [
    '',
    `Search benchmark — ${environment.cores} cores (${environment.cpuModel}), ${environment.memoryGiB} GiB, node ${environment.node}, ${environment.postgres.version.split(' on ')[0]}, server at ${commit}`,
    `WEB_CONCURRENCY=${S.webConcurrency}; autocannon ${S.connections} connections, ${S.seconds} s per query (+${S.warmup} s warm-up); load generator, server and Postgres share this machine`,
    `data: ${L.patients.length} patients (clones of ${L.templates.length} Synthea bundles), ${S.appointments} Appointments, ${L.resources} resources, database ${dbStats.size}`,
    S.reuse ? `load: reused the data of an earlier run (BENCH_SEARCH_REUSE=1)` : `load: ${L.seconds.toFixed(1)} s, ${rate.toFixed(0)} resources/s (${S.loadConcurrency} Bundles in flight) — goal ≥ 5,000 resources/s: ${rate >= 5000 ? 'met' : 'NOT MET'}`,
    S.reuse ? '' : `load CPU seconds per 1,000 resources: server ${f(loadCpu.server, 3)}, postgres backends ${f(loadCpu.postgres, 3)}, load generator ${f(loadCpu.client, 3)}`,
    `VACUUM ANALYZE: ${vacuumSeconds.toFixed(1)} s`,
    '',
    table(rows),
    '',
    'CPU per request (ms):',
    table([
      ['query', 'server', 'postgres', 'client', 'avg response bytes'],
      ...results.map((r) => [r.query, f(r.cpuMsPerRequest?.server, 2), f(r.cpuMsPerRequest?.postgres, 2), f(r.cpuMsPerRequest?.client, 2), f(r.avgBytes, 0)]),
    ]),
    `load average (1 min): ${results.map((r) => `${r.loadavg.before.toFixed(1)}->${r.loadavg.after.toFixed(1)}`).join(', ')}`,
    '',
  ];
  if (slowest && explains[slowest.query]) {
    const e = explains[slowest.query];
    lines.push(`slowest (p95): ${slowest.query} — EXPLAIN (ANALYZE, BUFFERS) of the statements search() runs for ${e.path}:`);
    for (const s of e.statements) {
      if (!s.plan) continue;
      lines.push('', `-- ${s.sql.replace(/\s+/g, ' ')}`, `-- bindings: ${JSON.stringify(s.bindings)}`, s.plan);
    }
    lines.push('');
  }
  process.stdout.write(lines.join('\n') + '\n');

  const outFile = path.join(OUT_DIR, `search-${stamp}.json`);
  fs.writeFileSync(
    outFile,
    JSON.stringify(
      {
        startedAt: started.toISOString(),
        finishedAt: new Date().toISOString(),
        environment,
        settings: { ...S, databaseUrl: safeUrl(db.url) },
        load: { cpuSecondsPer1000: loadCpu, networkRetries, patients: L.patients.length, appointments: S.appointments, resources: L.resources, seconds: L.seconds, resourcesPerSecond: rate, patientSeconds: L.patientSeconds, appointmentSeconds: L.apptSeconds, vacuumSeconds },
        database: dbStats,
        queries: results,
        explains,
      },
      null,
      2,
    ),
  );
  log(`results written to ${path.relative(ROOT, outFile)}`);
}

runMain(main, S.timeout);
