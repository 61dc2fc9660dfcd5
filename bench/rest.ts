/**
 * REST benchmark (`npm run bench:rest`). Prints numbers; asserts nothing.
 *
 *  1. (Re)creates the database fhir_bench on the local Postgres, starts the real server
 *     (`npx tsx server/main.ts`, detached, own process group) against it, waits for /readyz and
 *     creates the tenant `bench`.
 *  2. Loads BENCH_PATIENTS Patients through the API as transaction Bundles of BENCH_BUNDLE_SIZE.
 *  3. autocannon: read by id, create, update (each warmed up first, then measured).
 *  4. pgbench -S on the same Postgres (database pgbench_bench) as the ceiling.
 *  5. Prints a table and the goals, writes bench/out/rest-<timestamp>.json.
 *  6. Stops the server (process group) and closes every connection.
 *
 * Only 127.0.0.1 / localhost is contacted. See bench/README.md for the knobs.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import knexFactory from 'knex';
import pg from 'pg';
import type { Bundle } from 'fhir/r4';
import { ensureTenant } from '../server/http/tenants';
import { makePatient } from './patients';
import {
  AcOptions,
  CpuProbe,
  cannon,
  cpuDelta,
  cpuProbe,
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
  databaseUrl: process.env.BENCH_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/fhir_bench',
  pgbenchDb: process.env.BENCH_PGBENCH_DB || 'pgbench_bench',
  patients: intEnv('BENCH_PATIENTS', 10_000),
  bundleSize: Math.max(1, intEnv('BENCH_BUNDLE_SIZE', 100)),
  loadConcurrency: Math.max(1, intEnv('BENCH_LOAD_CONCURRENCY', 4)),
  seconds: Math.max(1, intEnv('BENCH_SECONDS', 15)),
  warmup: intEnv('BENCH_WARMUP', 2),
  connections: Math.max(1, intEnv('BENCH_CONNECTIONS', 50)),
  webConcurrency: Math.max(1, intEnv('WEB_CONCURRENCY', 2)),
  scenarios: (process.env.BENCH_SCENARIOS || 'read,create,update').split(',').map((s) => s.trim()).filter(Boolean),
  pgbench: (process.env.BENCH_PGBENCH ?? '1') !== '0',
  /** VACUUM ANALYZE the bench database after loading (autovacuum may be off, as in CI). */
  analyze: (process.env.BENCH_ANALYZE ?? '1') !== '0',
  pgbenchScale: Math.max(1, intEnv('BENCH_PGBENCH_SCALE', 10)),
  pgbenchThreads: Math.max(1, intEnv('BENCH_PGBENCH_THREADS', 2)),
  /** Folder for V8 CPU profiles of the server processes (node --cpu-prof); unset = no profiling. */
  cpuProfDir: process.env.BENCH_CPU_PROF || '',
  /** Hard stop for the whole run (seconds). */
  timeout: intEnv('BENCH_TIMEOUT', 1800),
};
const KNOWN_SCENARIOS = ['read', 'create', 'update'];
for (const s of S.scenarios) if (!KNOWN_SCENARIOS.includes(s)) throw new Error(`BENCH_SCENARIOS: unknown scenario "${s}" (${KNOWN_SCENARIOS.join(', ')})`);




// ---- load ----------------------------------------------------------------------------------


async function loadPatients(base: string, total: number, bundleSize: number, concurrency: number) {
  const ids: string[] = [];
  const bundles = Math.ceil(total / bundleSize);
  let next = 0;
  let done = 0;
  const t0 = performance.now();
  let lastReport = t0;
  const worker = async () => {
    for (;;) {
      const b = next++;
      if (b >= bundles) return;
      const from = b * bundleSize;
      const n = Math.min(bundleSize, total - from);
      const bundle: Bundle = {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: Array.from({ length: n }, (_, i) => ({
          fullUrl: `urn:uuid:00000000-0000-4000-8000-${String(from + i).padStart(12, '0')}`,
          resource: makePatient(from + i),
          request: { method: 'POST' as const, url: 'Patient' },
        })),
      };
      const r = await fetch(base, {
        method: 'POST',
        headers: { ...FHIR_HEADERS, Prefer: 'return=minimal' },
        body: JSON.stringify(bundle),
        signal: AbortSignal.timeout(120_000),
      });
      const text = await r.text();
      if (r.status !== 200) throw new Error(`load: bundle ${b} answered ${r.status}: ${text.slice(0, 800)}`);
      const out = JSON.parse(text) as Bundle;
      for (const e of out.entry ?? []) {
        const m = /^Patient\/([^/]+)/.exec(e.response?.location ?? '');
        if (m) ids.push(m[1]);
      }
      done++;
      const now = performance.now();
      if (now - lastReport > 5000) {
        lastReport = now;
        log(`  loaded ${done * bundleSize}/${total} ...`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, bundles) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  if (ids.length !== total) throw new Error(`load: expected ${total} ids back, got ${ids.length}`);
  return { ids, seconds, perSecond: total / seconds, bundles };
}


interface ScenarioResult {
  scenario: string;
  connections: number;
  seconds: number;
  requests: number;
  rps: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
  non2xx: number;
  connErrors: number;
  timeouts: number;
  errors: number;
  statusCodes: Record<string, number>;
  /** 1-minute load average of this machine before and after the measured run (others may share it). */
  loadavg: { before: number; after: number };
  /** CPU milliseconds per request: server processes, Postgres backends of the bench db, this load generator. */
  cpuMsPerRequest?: { server: number; postgres: number; client: number };
  autocannon: { rpsAverage: number; p50: number; p97_5: number; p99: number };
}


async function scenario(name: string, url: string, requests: NonNullable<AcOptions['requests']>, probe?: CpuProbe): Promise<ScenarioResult> {
  const base = { url, connections: S.connections, headers: FHIR_HEADERS, requests };
  if (S.warmup > 0) {
    log(`${name}: warm-up ${S.warmup} s`);
    await cannon({ ...base, duration: S.warmup }, false);
  }
  log(`${name}: ${S.connections} connections, ${S.seconds} s`);
  const loadBefore = os.loadavg()[0];
  const cpu0 = await probe?.take();
  const { result, lat, codes } = await cannon({ ...base, duration: S.seconds }, true);
  const cpu1 = await probe?.take();
  const loadAfter = os.loadavg()[0];
  const sorted = Float64Array.from(lat).sort();
  const non2xx = Object.entries(codes).filter(([c]) => !c.startsWith('2')).reduce((a, [, n]) => a + n, 0);
  const seconds = result.duration;
  const r: ScenarioResult = {
    scenario: name,
    connections: S.connections,
    seconds,
    requests: lat.length,
    rps: lat.length / seconds,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    mean: sorted.length ? sorted.reduce((a, b) => a + b, 0) / sorted.length : NaN,
    non2xx,
    connErrors: result.errors,
    timeouts: result.timeouts,
    errors: non2xx + result.errors,
    statusCodes: codes,
    loadavg: { before: loadBefore, after: loadAfter },
    cpuMsPerRequest:
      cpu0 && cpu1 && lat.length
        ? {
            server: (1000 * cpuDelta(cpu0.server, cpu1.server)) / lat.length,
            postgres: (1000 * cpuDelta(cpu0.postgres, cpu1.postgres)) / lat.length,
            client:
              (cpu1.client.user - cpu0.client.user + cpu1.client.system - cpu0.client.system) / 1000 / lat.length,
          }
        : undefined,
    autocannon: { rpsAverage: result.requests.average, p50: result.latency.p50, p97_5: result.latency.p97_5, p99: result.latency.p99 },
  };
  log(`${name}: ${r.rps.toFixed(0)} req/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, status ${JSON.stringify(codes)}, conn errors ${result.errors}, load avg ${loadBefore.toFixed(1)} -> ${loadAfter.toFixed(1)}`);
  return r;
}

function randomIndex(n: number): number {
  return Math.floor(Math.random() * n);
}

function readRequests(ids: string[]): NonNullable<AcOptions['requests']> {
  return [
    {
      method: 'GET',
      setupRequest: (req) => ({ ...req, path: `/fhir/${TENANT}/Patient/${ids[randomIndex(ids.length)]}` }),
    },
  ];
}

function createRequests(): NonNullable<AcOptions['requests']> {
  // Pre-serialised pool so the load generator spends its CPU on requests, not on JSON.
  const pool = Array.from({ length: 1000 }, (_, i) => JSON.stringify(makePatient(1_000_000 + i)));
  return [
    {
      method: 'POST',
      path: `/fhir/${TENANT}/Patient`,
      setupRequest: (req) => ({ ...req, body: pool[randomIndex(pool.length)] }),
    },
  ];
}

function updateRequests(ids: string[]): NonNullable<AcOptions['requests']> {
  const MARK = '__BENCH_ID__';
  const pool = Array.from({ length: 1000 }, (_, i) => {
    const [before, after] = JSON.stringify(makePatient(2_000_000 + i, MARK)).split(MARK);
    return { before, after };
  });
  return [
    {
      method: 'PUT',
      setupRequest: (req) => {
        const id = ids[randomIndex(ids.length)];
        const t = pool[randomIndex(pool.length)];
        return { ...req, path: `/fhir/${TENANT}/Patient/${id}`, body: t.before + id + t.after };
      },
    },
  ];
}

// ---- pgbench -------------------------------------------------------------------------------


async function pgbench(dbUrl: URL, adminUrl: string) {
  await recreateDatabase(adminUrl, S.pgbenchDb);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PGHOST: dbUrl.hostname,
    PGPORT: dbUrl.port || '5432',
    PGUSER: decodeURIComponent(dbUrl.username || 'postgres'),
  };
  if (dbUrl.password) env.PGPASSWORD = decodeURIComponent(dbUrl.password);
  log(`pgbench: initialising ${S.pgbenchDb} (scale ${S.pgbenchScale})`);
  const init = await runCommand('pgbench', ['-i', '-q', '-s', String(S.pgbenchScale), S.pgbenchDb], env, 600_000);
  if (init.code !== 0) throw new Error(`pgbench -i failed (${init.code}): ${init.stderr.slice(-800)}`);
  const args = ['-S', '-n', '-c', String(S.connections), '-j', String(S.pgbenchThreads), '-T', String(S.seconds), S.pgbenchDb];
  log(`pgbench ${args.join(' ')}`);
  const run = await runCommand('pgbench', args, env, (S.seconds + 120) * 1000);
  if (run.code !== 0) throw new Error(`pgbench -S failed (${run.code}): ${run.stderr.slice(-800)}`);
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(run.stdout) ?? /tps = ([\d.]+)/.exec(run.stdout);
  const latency = /latency average = ([\d.]+) ms/.exec(run.stdout);
  if (!tps) throw new Error(`could not parse pgbench output:\n${run.stdout}`);
  return { tps: Number(tps[1]), latencyAvgMs: latency ? Number(latency[1]) : undefined, command: `pgbench ${args.join(' ')}`, output: run.stdout.trim() };
}

// ---- report --------------------------------------------------------------------------------


// ---- main ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = new Date();
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const db = dbParts(S.databaseUrl);

  const cpus = os.cpus();
  const git = await runCommand('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], process.env, 10_000).catch(() => undefined);
  const dirty = await runCommand('git', ['-C', ROOT, 'status', '--porcelain', '--', 'server', 'resources', 'profiles', 'migrations', 'capability'], process.env, 10_000).catch(() => undefined);
  const commit = git?.code === 0 ? `${git.stdout.trim()}${dirty?.stdout.trim() ? ' + uncommitted server changes' : ''}` : 'unknown';
  const environment = {
    commit,
    cores: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    postgres: await postgresInfo(db.adminUrl),
  };
  log(`commit ${commit}; ${environment.cores} cores (${environment.cpuModel}), node ${environment.node}, ${environment.postgres.version.split(' on ')[0]}`);
  log(`settings: ${JSON.stringify({ ...S, databaseUrl: safeUrl(db.url) })}`);

  log(`recreating database ${db.name}`);
  await recreateDatabase(db.adminUrl, db.name);

  log(`starting server (WEB_CONCURRENCY=${S.webConcurrency})`);
  const server = await startServer(S.databaseUrl, S.webConcurrency, stamp, { cpuProfDir: S.cpuProfDir });
  log(`server ready at ${server.url} (log: ${path.relative(ROOT, server.logFile)})`);

  const owner = knexFactory({ client: 'pg', connection: S.databaseUrl, pool: { min: 0, max: 1 } });
  try {
    await ensureTenant(owner, TENANT, 'Benchmark tenant', BENCH_TENANT_SETTINGS);
  } finally {
    await owner.destroy();
  }
  const base = `${server.url}/fhir/${TENANT}`;
  await authorizeBench(server.url, TENANT);

  log(`loading ${S.patients} Patients in transaction Bundles of ${S.bundleSize}, ${S.loadConcurrency} in flight`);
  const load = await loadPatients(base, S.patients, S.bundleSize, S.loadConcurrency);
  log(`loaded ${S.patients} Patients in ${load.seconds.toFixed(1)} s = ${load.perSecond.toFixed(0)} resources/s`);

  // Without statistics the planner picks resources_type_updated (tenant_id, res_type, last_updated, id)
  // over the primary key for a read by id and scans every Patient's index entry. In production
  // autovacuum analyses the tables after a load; here it may be off (autovacuum = off in CI).
  if (S.analyze) {
    const t = performance.now();
    const c = new pg.Client({ connectionString: S.databaseUrl, connectionTimeoutMillis: 10_000 });
    await c.connect();
    try {
      await c.query('VACUUM ANALYZE');
    } finally {
      await c.end();
    }
    log(`VACUUM ANALYZE ${db.name}: ${((performance.now() - t) / 1000).toFixed(1)} s (autovacuum = ${environment.postgres.autovacuum})`);
  } else {
    log(`no ANALYZE after the load (BENCH_ANALYZE=0; autovacuum = ${environment.postgres.autovacuum})`);
  }

  const check = await fetch(`${base}/Patient/${load.ids[0]}`, { headers: FHIR_HEADERS, signal: AbortSignal.timeout(10_000) });
  await check.text();
  if (check.status !== 200) throw new Error(`read check answered ${check.status}`);

  const results: Record<string, ScenarioResult> = {};
  const probe = await cpuProbe(db.adminUrl, db.name, server.child.pid!);
  try {
    for (const name of S.scenarios) {
      const reqs = name === 'read' ? readRequests(load.ids) : name === 'create' ? createRequests() : updateRequests(load.ids);
      results[name] = await scenario(name, server.url, reqs, probe);
    }
  } finally {
    await probe.close();
  }

  log('stopping server');
  await server.stop();

  let pgb: Awaited<ReturnType<typeof pgbench>> | undefined;
  if (S.pgbench) {
    pgb = await pgbench(db.url, db.adminUrl);
    log(`pgbench -S: ${pgb.tps.toFixed(0)} tps`);
  }

  // ---- print
  const rows = [['scenario', 'requests/s', 'p50 ms', 'p95 ms', 'p99 ms', 'errors']];
  for (const r of Object.values(results)) {
    rows.push([r.scenario, f(r.rps, 0), f(r.p50, 2), f(r.p95, 2), f(r.p99, 2), `${r.errors}${r.errors ? ` (${Object.entries(r.statusCodes).filter(([c]) => !c.startsWith('2')).map(([c, n]) => `${c}x${n}`).join(' ')}${r.connErrors ? ` conn:${r.connErrors}` : ''})` : ''}`]);
  }
  if (pgb) rows.push([`pgbench -S (${S.connections} clients)`, f(pgb.tps, 0), '', '', '', '']);

  const read = results.read;
  const create = results.create;
  const ratio = read && pgb ? read.rps / pgb.tps : undefined;
  const goals = [
    {
      goal: 'read req/s ÷ pgbench tps ≥ 0.30',
      value: ratio === undefined ? 'n/a' : ratio.toFixed(3),
      met: ratio === undefined ? null : ratio >= 0.3,
    },
    { goal: 'read p99 ≤ 15 ms', value: read ? `${f(read.p99, 2)} ms` : 'n/a', met: read ? read.p99 <= 15 : null },
    { goal: 'create ≥ 1,500/s', value: create ? `${f(create.rps, 0)}/s` : 'n/a', met: create ? create.rps >= 1500 : null },
  ];
  const mark = (m: boolean | null) => (m === null ? 'not measured' : m ? 'met' : 'NOT MET');

  const lines = [
    '',
    `REST benchmark — ${environment.cores} cores (${environment.cpuModel}), ${environment.memoryGiB} GiB, node ${environment.node}, ${environment.postgres.version.split(' on ')[0]}`,
    `server at ${environment.commit}: WEB_CONCURRENCY=${S.webConcurrency}, DB_POOL_MAX=${process.env.DB_POOL_MAX ?? '10 (default)'}; autocannon ${S.connections} connections, ${S.seconds} s (+${S.warmup} s warm-up); load generator, server and Postgres share this machine`,
    `postgres: autovacuum=${environment.postgres.autovacuum}, ${S.analyze ? 'VACUUM ANALYZE after the load' : 'no ANALYZE after the load (BENCH_ANALYZE=0)'}, shared_buffers=${environment.postgres.shared_buffers}, synchronous_commit=${environment.postgres.synchronous_commit}, fsync=${environment.postgres.fsync}`,
    `load: ${S.patients} Patients in ${load.bundles} transaction Bundles of ${S.bundleSize} (${S.loadConcurrency} in flight): ${load.seconds.toFixed(1)} s, ${load.perSecond.toFixed(0)} resources/s`,
    '',
    table(rows),
    '',
    'CPU per request (ms; server = all server processes, postgres = backends of the bench db, client = autocannon):',
    table([
      ['scenario', 'server', 'postgres', 'client', 'sum', `max req/s on ${environment.cores} cores`],
      ...Object.values(results)
        .filter((r) => r.cpuMsPerRequest)
        .map((r) => {
          const c = r.cpuMsPerRequest!;
          const sum = c.server + c.postgres + c.client;
          return [r.scenario, f(c.server, 3), f(c.postgres, 3), f(c.client, 3), f(sum, 3), f((1000 * environment.cores) / sum, 0)];
        }),
    ]),
    `load average (1 min) during the runs: ${Object.values(results).map((r) => `${r.scenario} ${r.loadavg.before.toFixed(1)}->${r.loadavg.after.toFixed(1)}`).join(', ')}`,
    '',
    ratio !== undefined ? `read req/s ÷ pgbench tps = ${f(read!.rps, 0)} ÷ ${f(pgb!.tps, 0)} = ${ratio.toFixed(3)}` : 'read ratio: n/a (read or pgbench not run)',
    '',
    'goals:',
    ...goals.map((g) => `  ${g.goal.padEnd(34)} ${g.value.padStart(10)}  ${mark(g.met)}`),
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');

  const outFile = path.join(OUT_DIR, `rest-${stamp}.json`);
  fs.writeFileSync(
    outFile,
    JSON.stringify(
      {
        startedAt: started.toISOString(),
        finishedAt: new Date().toISOString(),
        environment,
        settings: { ...S, databaseUrl: safeUrl(db.url) },
        load: { patients: S.patients, bundles: load.bundles, bundleSize: S.bundleSize, concurrency: S.loadConcurrency, seconds: load.seconds, resourcesPerSecond: load.perSecond },
        scenarios: results,
        pgbench: pgb,
        readRatio: ratio,
        goals,
      },
      null,
      2,
    ),
  );
  log(`results written to ${path.relative(ROOT, outFile)}`);
}

runMain(main, S.timeout);
