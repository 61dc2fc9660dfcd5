/**
 * Shared helpers of the benchmarks (bench/rest.ts, bench/search.ts): settings, the local-only
 * database guard, server start/stop (own process group), CPU accounting, autocannon, reporting
 * and the process lifecycle (watchdog, signals). Only 127.0.0.1 / localhost is contacted.
 */
import { newSigningKeyJson, loadSigningKey } from '../server/auth/keys';
import { issueAccessToken } from '../server/auth/tokens';
import { loadConfig } from '../server/config';
import { spawn, ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';

export const ROOT = path.resolve(__dirname, '..');
export const OUT_DIR = path.join(__dirname, 'out');

// ---- settings ------------------------------------------------------------------------------

export function intEnv(name: string, def: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${v} is not a non-negative number`);
  return Math.floor(n);
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

export function dbParts(url: string) {
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
export const safeUrl = (u: URL) => `${u.protocol}//${u.username ? `${decodeURIComponent(u.username)}@` : ''}${u.host}${u.pathname}`;

export const log = (msg: string) => process.stdout.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- database ------------------------------------------------------------------------------

export async function recreateDatabase(adminUrl: string, name: string): Promise<void> {
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

export async function postgresInfo(adminUrl: string): Promise<Record<string, string>> {
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

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface Server {
  child: ChildProcess;
  port: number;
  url: string;
  logFile: string;
  stop(): Promise<void>;
}

let running: Server | undefined;

export function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    /* already gone */
  }
}

// ---- CPU accounting (Linux /proc): robust against other load on the machine ---------------

const CLK_TCK = 100; // getconf CLK_TCK on Linux

/** utime+stime of one process in seconds, undefined when it is gone or /proc is unavailable. */
export function procCpuSeconds(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

export function processGroup(pgid: number): number[] {
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

export type CpuSnapshot = Map<number, number>;
export function snapshot(pids: number[]): CpuSnapshot {
  const m: CpuSnapshot = new Map();
  for (const p of pids) {
    const s = procCpuSeconds(p);
    if (s !== undefined) m.set(p, s);
  }
  return m;
}
/** CPU seconds used between two snapshots (processes that appeared in between count from 0). */
export function cpuDelta(a: CpuSnapshot, b: CpuSnapshot): number {
  let total = 0;
  for (const [pid, s] of b) total += s - (a.get(pid) ?? 0);
  return total;
}

export interface CpuProbe {
  /** server process group (primary + workers) and the Postgres backends serving the bench db */
  take(): Promise<{ server: CpuSnapshot; postgres: CpuSnapshot; client: NodeJS.CpuUsage }>;
  close(): Promise<void>;
}

export async function cpuProbe(adminUrl: string, dbName: string, serverPgid: number): Promise<CpuProbe> {
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

export interface StartOptions {
  /** Folder for V8 CPU profiles of the server processes (node --cpu-prof); empty = no profiling. */
  cpuProfDir?: string;
  /** Log file name prefix in bench/out (default `server`). */
  logPrefix?: string;
}

export async function startServer(databaseUrl: string, webConcurrency: number, stamp: string, opts: StartOptions = {}): Promise<Server> {
  const cpuProfDir = opts.cpuProfDir ?? '';
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const logFile = path.join(OUT_DIR, `${opts.logPrefix ?? 'server'}-${stamp}-wc${webConcurrency}.log`);
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
    SIGNING_KEY: BENCH_SIGNING_KEY,
  };
  delete env.DATABASE_APP_URL;
  delete env.REDIS_URL;
  let cmd = 'npx';
  let args = ['tsx', 'server/main.ts'];
  if (cpuProfDir) {
    // Profiles are written when a process exits; exit-on-signal.cjs turns SIGTERM into exit(0).
    // cluster.fork() passes execArgv on, so every worker is profiled too.
    fs.mkdirSync(cpuProfDir, { recursive: true });
    cmd = process.execPath;
    args = [
      '--cpu-prof',
      `--cpu-prof-dir=${path.resolve(cpuProfDir)}`,
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

export const FHIR_HEADERS: Record<string, string> = { 'Content-Type': 'application/fhir+json', Accept: 'application/fhir+json' };

/** The benchmark server's token signing key (generated per run, passed as SIGNING_KEY). */
export const BENCH_SIGNING_KEY = newSigningKeyJson();

/**
 * A system/*.* access token for the benchmark tenant, signed with the server's key; also put into
 * FHIR_HEADERS so every request (load, autocannon, checks) carries it, as a real client would.
 */
export async function authorizeBench(serverUrl: string, tenant: string): Promise<string> {
  const config = loadConfig({ ...process.env, SIGNING_KEY: BENCH_SIGNING_KEY, PUBLIC_URL: serverUrl });
  const { token } = await issueAccessToken(config, loadSigningKey(config), { tenant, scope: 'system/*.*', clientId: 'bench', ttlSeconds: 6 * 3600 });
  FHIR_HEADERS.Authorization = `Bearer ${token}`;
  return token;
}

/** Benchmark tenants lift the per-tenant request rate limit (a tenant setting, see docs/security.md). */
export const BENCH_TENANT_SETTINGS = { rateLimitPerMinute: 0 };

// ---- autocannon ----------------------------------------------------------------------------

export interface AcRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string;
}
export interface AcOptions {
  url: string;
  connections: number;
  duration: number;
  timeout?: number;
  headers?: Record<string, string>;
  requests?: Array<AcRequest & { setupRequest?: (req: AcRequest, ctx: Record<string, unknown>) => AcRequest }>;
}
export interface AcHistogram {
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
export interface AcResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  requests: AcHistogram;
  latency: AcHistogram;
  statusCodeStats: Record<string, { count: number }>;
}
export interface AcInstance extends PromiseLike<AcResult> {
  on(ev: 'response', fn: (client: unknown, status: number, bytes: number, ms: number) => void): void;
  stop(): void;
}
// autocannon ships no type definitions.
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const autocannon = require('autocannon') as (opts: AcOptions) => AcInstance;

export function percentile(sorted: Float64Array, p: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export async function cannon(opts: AcOptions, record: boolean) {
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

// ---- processes -----------------------------------------------------------------------------

export function runCommand(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
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

// ---- report --------------------------------------------------------------------------------

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ');
  return [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.slice(1).map(line)].join('\n');
}

export const f = (n: number | undefined, d = 1) => (n === undefined || Number.isNaN(n) ? 'n/a' : n.toFixed(d));

// ---- lifecycle -----------------------------------------------------------------------------

function killServerNow(): void {
  const pid = running?.child.pid;
  if (pid && groupAlive(pid)) killGroup(pid, 'SIGKILL');
}

/**
 * Runs `main` with a hard time limit (seconds) and kills the server's process group on exit,
 * SIGINT/SIGTERM, failure or timeout. Exits the process: 0 on success, 1 on failure, 2 on timeout.
 */
export function runMain(main: () => Promise<void>, timeoutSeconds: number): void {
  process.on('exit', killServerNow);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\n[bench] ${sig}: stopping the server\n`);
      killServerNow();
      process.exit(130);
    });
  }
  const watchdog = setTimeout(() => {
    process.stderr.write(`[bench] still running after BENCH_TIMEOUT=${timeoutSeconds} s; giving up\n`);
    killServerNow();
    process.exit(2);
  }, timeoutSeconds * 1000);

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
}
