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
import { spawn, ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import knexFactory from 'knex';
import pg from 'pg';
import type { Bundle } from 'fhir/r4';
import { ensureTenant } from '../server/http/tenants';
import { makePatient } from './patients';

// ---- settings ------------------------------------------------------------------------------

function intEnv(name: string, def: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${v} is not a non-negative number`);
  return Math.floor(n);
}

const ROOT = path.resolve(__dirname, '..');
const OUT_DIR = path.join(__dirname, 'out');
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

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

function dbParts(url: string) {
  const u = new URL(url);
  if (!LOOPBACK.has(u.hostname)) throw new Error(`BENCH_DATABASE_URL must point at 127.0.0.1/localhost (got ${u.hostname}); this benchmark drops databases`);
  const name = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (!/^[a-z_][a-z0-9_]*$/.test(name) || !name.includes('bench')) {
    throw new Error(`Benchmark database name "${name}" must be a plain identifier containing "bench" (it is dropped and recreated)`);
  }
  const admin = new URL(url);
  admin.pathname = '/postgres';
  return { url: u, name, adminUrl: admin.toString() };
}

/** The connection string without credentials, for printing. */
const safeUrl = (u: URL) => `${u.protocol}//${u.username ? `${decodeURIComponent(u.username)}@` : ''}${u.host}${u.pathname}`;

const log = (msg: string) => process.stdout.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- database ------------------------------------------------------------------------------

async function recreateDatabase(adminUrl: string, name: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_]*$/.test(name) || !name.includes('bench')) throw new Error(`refusing to recreate database "${name}"`);
  const c = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await c.query(`CREATE DATABASE "${name}"`);
  } finally {
    await c.end();
  }
}

async function postgresInfo(adminUrl: string): Promise<Record<string, string>> {
  const c = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    const out: Record<string, string> = {};
    out.version = (await c.query('select version() as v')).rows[0].v;
    for (const s of ['max_connections', 'shared_buffers', 'synchronous_commit', 'fsync', 'wal_level', 'autovacuum']) {
      out[s] = (await c.query(`select current_setting('${s}') as v`)).rows[0].v;
    }
    return out;
  } finally {
    await c.end();
  }
}

// ---- server process ------------------------------------------------------------------------

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

interface Server {
  child: ChildProcess;
  port: number;
  url: string;
  logFile: string;
  stop(): Promise<void>;
}

let running: Server | undefined;

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    /* already gone */
  }
}

// ---- CPU accounting (Linux /proc): robust against other load on the machine ---------------

const CLK_TCK = 100; // getconf CLK_TCK on Linux

/** utime+stime of one process in seconds, undefined when it is gone or /proc is unavailable. */
function procCpuSeconds(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

function processGroup(pgid: number): number[] {
  let entries: string[] = [];
  try {
    entries = fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const e of entries) {
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[2]) === pgid) out.push(Number(e));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

type CpuSnapshot = Map<number, number>;
function snapshot(pids: number[]): CpuSnapshot {
  const m: CpuSnapshot = new Map();
  for (const p of pids) {
    const s = procCpuSeconds(p);
    if (s !== undefined) m.set(p, s);
  }
  return m;
}
/** CPU seconds used between two snapshots (processes that appeared in between count from 0). */
function cpuDelta(a: CpuSnapshot, b: CpuSnapshot): number {
  let total = 0;
  for (const [pid, s] of b) total += s - (a.get(pid) ?? 0);
  return total;
}

interface CpuProbe {
  /** server process group (primary + workers) and the Postgres backends serving the bench db */
  take(): Promise<{ server: CpuSnapshot; postgres: CpuSnapshot; client: NodeJS.CpuUsage }>;
  close(): Promise<void>;
}

async function cpuProbe(adminUrl: string, dbName: string, serverPgid: number): Promise<CpuProbe> {
  const c = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 10_000 });
  await c.connect();
  return {
    async take() {
      const r = await c.query(`SELECT pid FROM pg_stat_activity WHERE datname = $1`, [dbName]);
      return {
        server: snapshot(processGroup(serverPgid)),
        postgres: snapshot(r.rows.map((x: { pid: number }) => x.pid)),
        client: process.cpuUsage(),
      };
    },
    close: () => c.end(),
  };
}

async function startServer(databaseUrl: string, webConcurrency: number, stamp: string): Promise<Server> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const logFile = path.join(OUT_DIR, `server-${stamp}-wc${webConcurrency}.log`);
  const logStream = fs.openSync(logFile, 'a');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: databaseUrl,
    PORT: String(port),
    HOST: '127.0.0.1',
    PUBLIC_URL: url,
    DEMO: 'false',
    WEB_CONCURRENCY: String(webConcurrency),
    LOG_LEVEL: 'warn',
    NODE_ENV: 'production',
  };
  delete env.DATABASE_APP_URL;
  delete env.REDIS_URL;
  let cmd = 'npx';
  let args = ['tsx', 'server/main.ts'];
  if (S.cpuProfDir) {
    // Profiles are written when a process exits; exit-on-signal.cjs turns SIGTERM into exit(0).
    // cluster.fork() passes execArgv on, so every worker is profiled too.
    fs.mkdirSync(S.cpuProfDir, { recursive: true });
    cmd = process.execPath;
    args = [
      '--cpu-prof',
      `--cpu-prof-dir=${path.resolve(S.cpuProfDir)}`,
      '--require',
      path.join(__dirname, 'exit-on-signal.cjs'),
      '--import',
      'tsx',
      'server/main.ts',
    ];
  }
  const child = spawn(cmd, args, { cwd: ROOT, env, detached: true, stdio: ['ignore', logStream, logStream] });
  fs.closeSync(logStream);
  const pid = child.pid!;
  let exited: { code: number | null; signal: string | null } | undefined;
  child.on('exit', (code, signal) => (exited = { code, signal }));
  const server: Server = {
    child,
    port,
    url,
    logFile,
    async stop() {
      if (!groupAlive(pid)) return;
      killGroup(pid, 'SIGTERM');
      for (let i = 0; i < 100 && groupAlive(pid); i++) await sleep(100);
      if (groupAlive(pid)) killGroup(pid, 'SIGKILL');
      for (let i = 0; i < 30 && groupAlive(pid); i++) await sleep(100);
      if (running === server) running = undefined;
    },
  };
  running = server;

  const deadline = Date.now() + 90_000;
  for (;;) {
    if (exited) throw new Error(`server exited during start (${JSON.stringify(exited)}); see ${logFile}`);
    if (Date.now() > deadline) throw new Error(`server not ready after 90 s; see ${logFile}`);
    try {
      const r = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
      if (r.status === 200) break;
    } catch {
      /* not listening yet */
    }
    await sleep(250);
  }
  // With several workers /readyz answers once the first one listens; give the others a moment.
  if (webConcurrency > 1) await sleep(1500);
  return server;
}

// ---- load ----------------------------------------------------------------------------------

const FHIR_HEADERS = { 'Content-Type': 'application/fhir+json', Accept: 'application/fhir+json' };

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

// ---- autocannon ----------------------------------------------------------------------------

interface AcRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string;
}
interface AcOptions {
  url: string;
  connections: number;
  duration: number;
  timeout?: number;
  headers?: Record<string, string>;
  requests?: Array<AcRequest & { setupRequest?: (req: AcRequest, ctx: Record<string, unknown>) => AcRequest }>;
}
interface AcHistogram {
  average: number;
  mean: number;
  stddev: number;
  min: number;
  max: number;
  total: number;
  p50: number;
  p90: number;
  p97_5: number;
  p99: number;
}
interface AcResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  requests: AcHistogram;
  latency: AcHistogram;
  statusCodeStats: Record<string, { count: number }>;
}
interface AcInstance extends PromiseLike<AcResult> {
  on(ev: 'response', fn: (client: unknown, status: number, bytes: number, ms: number) => void): void;
  stop(): void;
}
// autocannon ships no type definitions.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const autocannon = require('autocannon') as (opts: AcOptions) => AcInstance;

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

function percentile(sorted: Float64Array, p: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

async function cannon(opts: AcOptions, record: boolean) {
  const lat: number[] = [];
  const codes: Record<string, number> = {};
  const inst = autocannon({ timeout: 10, ...opts });
  if (record) {
    inst.on('response', (_c, status, _b, ms) => {
      lat.push(ms);
      codes[status] = (codes[status] ?? 0) + 1;
    });
  }
  // Bound the wait even if autocannon misbehaves.
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      inst.stop();
      reject(new Error(`autocannon did not finish within ${opts.duration + 60} s`));
    }, (opts.duration + 60) * 1000);
  });
  try {
    const result = await Promise.race([inst, guard]);
    return { result, lat, codes };
  } finally {
    clearTimeout(timer);
  }
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

function runCommand(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

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

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ');
  return [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.slice(1).map(line)].join('\n');
}

const f = (n: number | undefined, d = 1) => (n === undefined || Number.isNaN(n) ? 'n/a' : n.toFixed(d));

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
  const server = await startServer(S.databaseUrl, S.webConcurrency, stamp);
  log(`server ready at ${server.url} (log: ${path.relative(ROOT, server.logFile)})`);

  const owner = knexFactory({ client: 'pg', connection: S.databaseUrl, pool: { min: 0, max: 1 } });
  try {
    await ensureTenant(owner, TENANT, 'Benchmark tenant');
  } finally {
    await owner.destroy();
  }
  const base = `${server.url}/fhir/${TENANT}`;

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

// ---- lifecycle -----------------------------------------------------------------------------

function killServerNow(): void {
  const pid = running?.child.pid;
  if (pid && groupAlive(pid)) killGroup(pid, 'SIGKILL');
}

process.on('exit', killServerNow);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    process.stderr.write(`\n[bench] ${sig}: stopping the server\n`);
    killServerNow();
    process.exit(130);
  });
}
const watchdog = setTimeout(() => {
  process.stderr.write(`[bench] still running after BENCH_TIMEOUT=${S.timeout} s; giving up\n`);
  killServerNow();
  process.exit(2);
}, S.timeout * 1000);

main()
  .then(async () => {
    await running?.stop();
    clearTimeout(watchdog);
    process.exit(0);
  })
  .catch(async (err) => {
    process.stderr.write(`[bench] failed: ${err?.stack ?? err}\n`);
    await running?.stop().catch(() => undefined);
    clearTimeout(watchdog);
    process.exit(1);
  });
