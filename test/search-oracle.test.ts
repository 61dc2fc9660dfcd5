/**
 * Search correctness oracle: the Synthea fixtures are imported into a fresh tenant, every stored
 * resource of the tested types is read back over HTTP, and a few hundred (type, parameter, value)
 * searches drawn from that data (fixed seed) are answered twice: by the server, and by a
 * brute-force evaluation of the official SearchParameter expression over the same resources
 * (test/helpers/search-oracle.ts, which shares no code with server/search). Any difference fails
 * the test, naming the query, both counts and a few of the differing ids.
 *
 * SEARCH_ORACLE_FOLDERS=blaze-2021 limits the import to one folder (faster local runs).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { importPaths } from '../server/cli/import';
import { startTestServer, TestServer } from './helpers/test-server';
import { followPages } from './rest-util';
import {
  Dec,
  escapeValue,
  exclusionReason,
  extract,
  Extracted,
  foldString,
  matches,
  officialParams,
  OracleParam,
  Unsupported,
} from './helpers/search-oracle';

const ROOT = process.env.SYNTHEA_DIR ?? '/work/shared/fixtures/synthea';
const FOLDERS = (process.env.SEARCH_ORACLE_FOLDERS ?? 'blaze-2021,smart-on-fhir-2019').split(',');
const TYPES = ['Patient', 'Observation', 'Encounter', 'Condition', 'Procedure', 'MedicationRequest', 'Immunization', 'DiagnosticReport', 'Practitioner', 'Organization', 'Claim'];
const SEED = 0x5eed2024;

let s: TestServer;
const stored = new Map<string, Array<Record<string, any>>>();

beforeAll(async () => {
  s = await startTestServer();
  const t0 = Date.now();
  for (const folder of FOLDERS) await importPaths([path.join(ROOT, folder)], { baseUrl: s.baseUrl, token: await s.token(), concurrency: 4, quiet: true });
  // This cluster runs with autovacuum off: without statistics the planner picks quadratic
  // anti-joins for :missing / :not over thousands of fresh rows.
  await s.db.owner.raw('ANALYZE resources, idx_string, idx_token, idx_date, idx_number, idx_quantity, idx_reference, idx_uri');
  const t1 = Date.now();
  await Promise.all(
    TYPES.map(async (type) => {
      const { pages } = await followPages(s, `${s.base}/${type}?_count=1000`);
      const list = pages.flatMap((p) => ((p.entry as Array<{ resource: Record<string, any>; search?: { mode?: string } }>) ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource));
      stored.set(type, list);
    }),
  );
  process.stdout.write(
    `search oracle: imported ${FOLDERS.join(' + ')} in ${((t1 - t0) / 1000).toFixed(1)} s, read back ` +
      `${[...stored.values()].reduce((n, l) => n + l.length, 0)} resources in ${((Date.now() - t1) / 1000).toFixed(1)} s\n`,
  );
}, 240_000);
afterAll(async () => s?.close());

// ---- deterministic choices ------------------------------------------------------------------

function mulberry32(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(SEED);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(list: T[]): T => list[int(list.length)];
const uniqSorted = <T>(list: T[], key: (x: T) => string = (x) => String(x)): T[] => {
  const m = new Map<string, T>();
  for (const x of list) if (!m.has(key(x))) m.set(key(x), x);
  return [...m.keys()].sort().map((k) => m.get(k)!);
};

function decToString(d: Dec): string {
  const neg = d.m < 0n;
  let digits = (neg ? -d.m : d.m).toString();
  if (d.s === 0) return (neg ? '-' : '') + digits;
  digits = digits.padStart(d.s + 1, '0');
  return (neg ? '-' : '') + digits.slice(0, -d.s) + '.' + digits.slice(-d.s);
}
/** Rounds half away from zero to `k` decimals (k < d.s). */
function roundDec(d: Dec, k: number): Dec {
  const f = 10n ** BigInt(d.s - k);
  const neg = d.m < 0n;
  const a = neg ? -d.m : d.m;
  let q = a / f;
  if ((a % f) * 2n >= f) q += 1n;
  return { m: neg ? -q : q, s: k };
}

// ---- query generation -----------------------------------------------------------------------

interface Query {
  type: string;
  param: OracleParam;
  key: string; // name[:modifier]
  modifier?: string;
  value: string;
}

const DATE_PREFIXES = ['', 'eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb'];
const NUMBER_PREFIXES = ['', 'eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap'];

function dateVariants(raw: string): string[] {
  const zone = /(Z|[+-]\d{2}:\d{2})$/.exec(raw)?.[1] ?? '';
  const out = [raw.slice(0, 4)];
  if (raw.length >= 7) out.push(raw.slice(0, 7));
  if (raw.length >= 10) out.push(raw.slice(0, 10));
  if (raw.length >= 16) out.push(raw.slice(0, 16) + zone, raw.slice(0, 16) + 'Z');
  if (raw.length >= 19) out.push(raw.slice(0, 19) + zone, raw);
  return out;
}

function generate(type: string, p: OracleParam, ext: Extracted[]): Array<Omit<Query, 'type' | 'param'>> {
  const q: Array<Omit<Query, 'type' | 'param'>> = [];
  const add = (value: string, modifier?: string) => q.push({ key: modifier ? `${p.code}:${modifier}` : p.code, modifier, value });
  if (p.code !== '_id') {
    // Mostly the smaller side (the larger one is the complement, and slow to page through).
    const withValue = ext.filter((e) => matches(p, 'missing', 'false', e, s.baseUrl)).length;
    const small = withValue <= ext.length / 2 ? 'false' : 'true';
    add(rand() < 0.75 ? small : small === 'true' ? 'false' : 'true', 'missing');
  }
  switch (p.type) {
    case 'string': {
      const pool = uniqSorted(ext.flatMap((e) => e.string ?? []));
      if (!pool.length) break;
      const a = pick(pool);
      add(escapeValue(a.slice(0, 1 + int(Math.min(a.length, 8)))));
      add(escapeValue(pick(pool).toUpperCase()));
      const odd = pool.filter((x) => /[^A-Za-z0-9 ]/.test(x));
      if (odd.length) {
        const o = pick(odd);
        add(escapeValue(o.normalize('NFD').replace(/\p{M}/gu, '').replace(/[^A-Za-z0-9 ]/g, ''))); // accents and punctuation dropped
        add(escapeValue(o.slice(0, Math.max(1, o.search(/[^A-Za-z0-9 ]/) + 1)))); // prefix ending in the odd character
      }
      const e = pick(pool);
      add(escapeValue(e), 'exact');
      if (e.toLowerCase() !== e) add(escapeValue(e.toLowerCase()), 'exact');
      const c = pick(pool.filter((x) => x.length > 4).concat(pool)).slice(1, 4);
      if (foldString(c)) add(escapeValue(c), 'contains');
      add(`${escapeValue(pick(pool).slice(0, 3))},${escapeValue(pick(pool).slice(0, 3))}`);
      add('Qzxvw');
      break;
    }
    case 'token': {
      const items = ext.flatMap((e) => e.token ?? []);
      const coded = uniqSorted(items.filter((i) => i.code !== undefined), (i) => `${i.kind}|${i.system ?? ''}|${i.code}`);
      if (!coded.length) break;
      const a = pick(coded);
      add(escapeValue(a.code!));
      if (p.code === '_id') {
        add(`${escapeValue(pick(coded).code!)},${escapeValue(pick(coded).code!)}`);
        add('no-such-id');
        break;
      }
      const withSystem = coded.filter((i) => i.system !== undefined && i.kind !== 'contact');
      if (withSystem.length) {
        const b = pick(withSystem);
        add(`${escapeValue(b.system!)}|${escapeValue(b.code!)}`);
        add(`${escapeValue(pick(withSystem).system!)}|`);
        add(`${escapeValue(b.system!)}|${escapeValue(b.code!)}x`);
      }
      const noSystem = coded.filter((i) => i.system === undefined && (i.kind === 'coding' || i.kind === 'identifier'));
      if (noSystem.length) add(`|${escapeValue(pick(noSystem).code!)}`);
      add(escapeValue(pick(coded).code!), 'not');
      add(`${escapeValue(pick(coded).code!)},${escapeValue(pick(coded).code!)}`);
      const texts = uniqSorted(items.flatMap((i) => (i.text ? [i.text] : [])));
      if (texts.length) {
        const t = pick(texts);
        add(escapeValue(t.slice(0, 2 + int(Math.min(t.length, 10)))), 'text');
      }
      add('no-such-code');
      break;
    }
    case 'date': {
      const raws = uniqSorted(ext.flatMap((e) => e.dateRaw ?? []));
      if (!raws.length) break;
      for (let i = 0; i < 7; i++) add(pick(DATE_PREFIXES) + pick(dateVariants(pick(raws))));
      add('1850-01-01');
      add(`ge${new Date().getUTCFullYear() + 5}`);
      break;
    }
    case 'reference': {
      const refs = uniqSorted(ext.flatMap((e) => (e.reference ?? []).flatMap((r) => (r.ref ? [r.ref] : []))));
      const idents = ext.flatMap((e) => (e.reference ?? []).flatMap((r) => (r.identifier ? [r.identifier] : [])));
      if (idents.length) {
        const i = pick(idents);
        add(`${escapeValue(i.system ?? '')}|${escapeValue(i.value ?? '')}`, 'identifier');
      }
      if (!refs.length) break;
      const a = pick(refs);
      add(a);
      const m = /^([A-Z][A-Za-z]+)\/([^/]+)$/.exec(pick(refs));
      if (m) {
        add(m[2]);
        add(m[2], m[1]);
        add(`${s.baseUrl}/${m[1]}/${m[2]}`);
      }
      add(`${pick(refs)},${pick(refs)}`);
      add(`${p.target?.includes('Patient') ? 'Patient' : (p.target?.[0] ?? 'Patient')}/does-not-exist`);
      break;
    }
    case 'quantity':
    case 'number': {
      const vals = uniqSorted(
        ext.flatMap((e) => (p.type === 'quantity' ? (e.quantity ?? []) : (e.number ?? []).map((value) => ({ value, system: undefined, code: undefined, unit: undefined })))),
        (x) => `${decToString(x.value)}|${x.system ?? ''}|${x.code ?? ''}|${x.unit ?? ''}`,
      );
      if (!vals.length) break;
      const unitOf = (x: (typeof vals)[number]) => (p.type === 'number' ? '' : rand() < 0.7 && x.system ? `|${escapeValue(x.system)}|${escapeValue(x.code ?? '')}` : x.unit ? `||${escapeValue(x.unit)}` : '');
      for (let i = 0; i < (vals.length > 100 ? 30 : 7); i++) {
        const x = pick(vals);
        let v = x.value;
        if (v.s > 0 && rand() < 0.5) v = roundDec(v, int(v.s)); // fewer digits: a wider implicit range
        add(pick(NUMBER_PREFIXES) + decToString(v) + unitOf(x));
      }
      const x = pick(vals);
      if (p.type === 'quantity') add(`${decToString(x.value)}|http://unitsofmeasure.org|no-such-unit`);
      add('-987654.321');
      break;
    }
    case 'uri': {
      const pool = uniqSorted(ext.flatMap((e) => e.uri ?? []));
      if (!pool.length) break;
      const a = pick(pool);
      add(a);
      add(a.slice(0, a.lastIndexOf('/') + 1), 'below');
      add(a + '/more', 'above');
      add(pick(pool), 'above');
      add(a.slice(0, -1));
      add('http://example.org/no-such-uri');
      break;
    }
  }
  return q;
}

// ---- running --------------------------------------------------------------------------------

async function serverIds(q: Query): Promise<{ ids: string[]; total?: number; status: number; error?: string }> {
  const first = `${s.base}/${q.type}?${encodeURIComponent(q.key)}=${encodeURIComponent(q.value)}&_count=1000&_elements=id`;
  const ids: string[] = [];
  let total: number | undefined;
  let path: string | undefined = first;
  while (path) {
    const r = await s.http.get(path);
    if (r.status !== 200) return { ids, status: r.status, error: JSON.stringify(r.body?.issue ?? r.body).slice(0, 300) };
    total ??= r.body.total;
    const warn = (r.body.entry ?? []).find((e: { search?: { mode?: string } }) => e.search?.mode === 'outcome');
    if (warn) return { ids, status: 200, error: `outcome: ${JSON.stringify(warn.resource.issue).slice(0, 300)}` };
    for (const e of r.body.entry ?? []) if (e.search?.mode === 'match') ids.push(e.resource.id);
    const next = r.body.link?.find((l: { relation: string }) => l.relation === 'next')?.url;
    path = next ? new URL(next).pathname + new URL(next).search : undefined;
  }
  return { ids, total, status: 200 };
}

async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

test('the server agrees with the oracle on every generated query', async () => {
  const t0 = Date.now();
  const excluded: string[] = [];
  const queries: Array<Query & { expected: Set<string> }> = [];
  for (const type of TYPES) {
    const resources = stored.get(type)!;
    expect(resources.length).toBeGreaterThan(0);
    for (const p of officialParams(type)) {
      const reason = exclusionReason(p);
      if (reason) {
        excluded.push(`${type}.${p.code}: ${reason}`);
        continue;
      }
      let ext: Extracted[];
      try {
        ext = resources.map((r) => extract(p, r));
      } catch (e) {
        // Unsupported: a value type the oracle has no rule for; anything else: fhirpath.js could not
        // evaluate the expression on some resource (e.g. `as` on a collection of several items).
        const why = e instanceof Unsupported ? e.message : `fhirpath.js cannot evaluate it on every resource: ${(e as Error).message.slice(0, 80)}`;
        excluded.push(`${type}.${p.code}: ${why}`);
        continue;
      }
      for (const g of generate(type, p, ext)) {
        const expected = new Set<string>();
        resources.forEach((r, i) => {
          if (matches(p, g.modifier, g.value, ext[i], s.baseUrl)) expected.add(r.id);
        });
        queries.push({ ...g, type, param: p, expected });
      }
    }
  }

  const failures: string[] = [];
  const byType: Record<string, number> = {};
  let nonEmpty = 0;
  const timings: Array<[number, string]> = [];
  await pool(queries, 4, async (q) => {
    byType[q.param.type] = (byType[q.param.type] ?? 0) + 1;
    if (q.expected.size) nonEmpty++;
    const tq = Date.now();
    const got = await serverIds(q);
    timings.push([Date.now() - tq, `${q.type}?${q.key}=${q.value} (${got.ids.length})`]);
    const actual = new Set(got.ids);
    const missing = [...q.expected].filter((id) => !actual.has(id));
    const extra = [...actual].filter((id) => !q.expected.has(id));
    const label = `${q.type}?${q.key}=${q.value}`;
    if (got.status !== 200 || got.error) failures.push(`${label}: HTTP ${got.status} ${got.error ?? ''}`);
    else if (missing.length || extra.length) {
      failures.push(
        `${label} [${q.param.type}]: expected ${q.expected.size}, server ${actual.size}; ` +
          `missing ${missing.length} (${missing.slice(0, 3).join(', ')}), extra ${extra.length} (${extra.slice(0, 3).join(', ')})`,
      );
    } else if (got.total !== undefined && got.total !== actual.size) failures.push(`${label}: total ${got.total} but ${actual.size} matches`);
  });

  const split = Object.entries(byType).sort().map(([t, n]) => `${t} ${n}`).join(', ');
  process.stdout.write(
    `search oracle: ${queries.length} queries (${nonEmpty} with matches) in ${((Date.now() - t0) / 1000).toFixed(1)} s — ${split}; ` +
      `${failures.length} disagreements; ${excluded.length} parameters excluded\n`,
  );
  const byReason = new Map<string, string[]>();
  for (const x of excluded) {
    const [param, reason] = x.split(/: (.*)/s);
    byReason.set(reason, [...(byReason.get(reason) ?? []), param]);
  }
  process.stdout.write(`search oracle: excluded —\n${[...byReason].map(([r, ps]) => `  ${r}: ${ps.join(', ')}`).join('\n')}\n`);
  if (process.env.SEARCH_ORACLE_VERBOSE) {
    fs.writeFileSync(path.join(os.tmpdir(), 'search-oracle-queries.tsv'), queries.map((q) => `${q.param.type}\t${q.expected.size}\t${q.type}?${q.key}=${q.value}`).join('\n'));
    const slow = timings.sort((a, b) => b[0] - a[0]).slice(0, 25);
    process.stdout.write(`slowest:\n  ${slow.map(([ms, l]) => `${ms} ms ${l}`).join('\n  ')}\n`);
  }
  if (failures.length) process.stdout.write(`disagreements:\n  ${failures.join('\n  ')}\n`);
  expect(failures).toEqual([]);
  expect(queries.length).toBeGreaterThan(200);
  expect(nonEmpty).toBeGreaterThan(100);
}, 180_000);

// Two clauses of one date parameter (`date=ge2015&date=lt2016`) must match what both match on
// their own (AND across values of a multi-valued parameter). The server answers such pairs with
// one condition on the same index row when the parameter has at most one value per resource;
// this checks both ways of answering against the oracle's intersection.
test('pairs of date clauses on one parameter match the intersection of each clause', async () => {
  const PAIRS: Array<[string, string]> = [['ge', 'lt'], ['gt', 'le'], ['ge', 'le'], ['sa', 'eb'], ['ge', 'ge'], ['eq', 'lt'], ['ne', 'ge']];
  const failures: string[] = [];
  const queries: Array<{ label: string; path: string; expected: Set<string> }> = [];
  for (const type of TYPES) {
    const resources = stored.get(type)!;
    for (const p of officialParams(type)) {
      if (p.type !== 'date' || exclusionReason(p)) continue;
      let ext: Extracted[];
      try {
        ext = resources.map((r) => extract(p, r));
      } catch {
        continue;
      }
      const raws = uniqSorted(ext.flatMap((e) => e.dateRaw ?? []));
      if (!raws.length) continue;
      for (let i = 0; i < 4; i++) {
        const [pa, pb] = pick(PAIRS);
        const a = pa + pick(dateVariants(pick(raws)));
        const b = pb + pick(dateVariants(pick(raws)));
        const expected = new Set<string>();
        resources.forEach((r, k) => {
          if (matches(p, undefined, a, ext[k], s.baseUrl) && matches(p, undefined, b, ext[k], s.baseUrl)) expected.add(r.id);
        });
        const key = encodeURIComponent(p.code);
        queries.push({ label: `${type}?${p.code}=${a}&${p.code}=${b}`, path: `${s.base}/${type}?${key}=${encodeURIComponent(a)}&${key}=${encodeURIComponent(b)}&_count=1000&_elements=id`, expected });
      }
    }
  }
  await pool(queries, 4, async (q) => {
    const ids = new Set<string>();
    let path: string | undefined = q.path;
    let total: number | undefined;
    while (path) {
      const r = await s.http.get(path);
      if (r.status !== 200) {
        failures.push(`${q.label}: HTTP ${r.status}`);
        return;
      }
      total ??= r.body.total;
      for (const e of r.body.entry ?? []) if (e.search?.mode === 'match') ids.add(e.resource.id);
      const next = r.body.link?.find((l: { relation: string }) => l.relation === 'next')?.url;
      path = next ? new URL(next).pathname + new URL(next).search : undefined;
    }
    const missing = [...q.expected].filter((id) => !ids.has(id));
    const extra = [...ids].filter((id) => !q.expected.has(id));
    if (missing.length || extra.length) failures.push(`${q.label}: expected ${q.expected.size}, server ${ids.size} (missing ${missing.length}, extra ${extra.length})`);
    else if (total !== undefined && total !== ids.size) failures.push(`${q.label}: total ${total} but ${ids.size} matches`);
  });
  process.stdout.write(`search oracle: ${queries.length} date pairs (${queries.filter((q) => q.expected.size).length} with matches), ${failures.length} disagreements\n`);
  if (failures.length) process.stdout.write(`disagreements:\n  ${failures.join('\n  ')}\n`);
  expect(failures).toEqual([]);
  expect(queries.filter((q) => q.expected.size).length).toBeGreaterThan(20);
}, 120_000);
