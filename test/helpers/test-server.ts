/**
 * A real server (express app on an ephemeral port, real Postgres) with a fresh tenant per test
 * file, so test files never see each other's data.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import supertest from 'supertest';
import { loadConfig, Config } from '../../server/config';
import { openDatabase, Database } from '../../server/db/connection';
import { createApp } from '../../server/http/app';
import { ensureTenant, setTenantSettings } from '../../server/http/tenants';
import type { TenantSettings } from '../../server/fhir/types';
import { TEST_DATABASE_URL } from './db-url';
import type { AuditTrail } from '../../server/audit/trail';
import { loadSigningKey, newSigningKeyJson } from '../../server/auth/keys';
import { issueAccessToken, IssueInput } from '../../server/auth/tokens';
import type { Jobs } from '../../server/jobs';
import type { AppDeps } from '../../server/http/app';
import type { TenantDirectory } from '../../server/http/tenants';

/** One signing key for the whole test process (as a deployment has one). */
const SIGNING_KEY = newSigningKeyJson();
/** The master key of encryption at rest in tests: a constant, since the test database outlives a run. */
export const TEST_MASTER_KEY = Buffer.alloc(32, 7).toString('base64');
// The CLIs the tests start (tenant, reindex, audit:verify, keys:rotate) inherit it.
process.env.MASTER_KEY = TEST_MASTER_KEY;

export interface TestServer {
  config: Config;
  db: Database;
  server: Server;
  url: string;
  tenant: string;
  /** FHIR base path of the test tenant, e.g. /fhir/t-ab12cd */
  base: string;
  /** Absolute FHIR base URL. */
  baseUrl: string;
  /** HTTP client that sends, with every request, a system/*.* token of the tenant named in the
   * path (/fhir/<tenant>/...; the test tenant for other paths). */
  http: TenantClient;
  /** HTTP client without any token. */
  anon: ReturnType<typeof supertest>;
  /** A signed access token (defaults: the test tenant, system/*.*). */
  token(input?: Partial<IssueInput>): Promise<string>;
  /** An HTTP client sending the given token (or a token minted from `input`). */
  as(input: Partial<IssueInput> | string): Promise<ReturnType<typeof supertest.agent>>;
  newTenant(settings?: TenantSettings): Promise<string>;
  setSettings(settings: TenantSettings, tenant?: string): Promise<void>;
  /** The audit trail writer: `await s.audit.flush()` seals everything recorded so far. */
  audit: AuditTrail;
  /** The app's job runner (not started: JOB_RUNNER=off unless `env` says otherwise; drive it
   * with runDue()/drain(), or give `jobs` options with onlyTenants and start it). */
  jobs: Jobs;
  tenants: TenantDirectory;
  close(): Promise<void>;
}

type Methods = 'get' | 'post' | 'put' | 'patch' | 'delete' | 'head' | 'options';
export type TenantClient = Pick<ReturnType<typeof supertest>, Methods>;

export async function startTestServer(env: Record<string, string> = {}, opts: { jobs?: AppDeps['jobs'] } = {}): Promise<TestServer> {
  // Test servers share one database: no job runner polls every tenant unless a test asks for it.
  const config = loadConfig({ ...process.env, DATABASE_URL: TEST_DATABASE_URL, PORT: '0', SIGNING_KEY, MASTER_KEY: TEST_MASTER_KEY, JOB_RUNNER: 'off', ...env });
  const db = await openDatabase(config, { migrate: false });
  const { app, tenants, audit, limits, jobs } = createApp({ config, db: db.app, jobs: opts.jobs });
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  // Idle keep-alive sockets outlive the clients' pools, so a reused socket is never closed under
  // a request in flight (undici's ECONNRESET race on a busy machine).
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  // The public URL must match the listening port for Location headers.
  config.publicUrl = url;
  const key = loadSigningKey(config);
  const systemTokens = new Map<string, string>();
  const mint = async (input: IssueInput) => (await issueAccessToken(config, key, input)).token;
  // Test tenants have no request-rate limit unless a test sets one (the suites send thousands).
  const newTenant = async (settings: TenantSettings = { rateLimitPerMinute: 0 }) => {
    const id = `t-${randomBytes(5).toString('hex')}`;
    await ensureTenant(db.owner, id, `Test tenant ${id}`, settings);
    systemTokens.set(id, await mint({ tenant: id, scope: 'system/*.*', clientId: 'test-suite' }));
    return id;
  };
  const tenant = await newTenant();
  const token = async (input: Partial<IssueInput> = {}) => mint({ tenant, scope: 'system/*.*', clientId: 'test-suite', ...input });
  const plain = supertest(url);
  const tokenForPath = (path: string) => systemTokens.get(/^\/fhir\/([^/?]+)/.exec(path)?.[1] ?? '') ?? systemTokens.get(tenant)!;
  const methods: Methods[] = ['get', 'post', 'put', 'patch', 'delete', 'head', 'options'];
  const http = Object.fromEntries(
    methods.map((m) => [m, (path: string) => plain[m](path).set('Authorization', `Bearer ${tokenForPath(path)}`)]),
  ) as unknown as TenantClient;
  const as = async (input: Partial<IssueInput> | string) =>
    supertest.agent(url).set('Authorization', `Bearer ${typeof input === 'string' ? input : await token(input)}`);
  return {
    config,
    db,
    server,
    url,
    tenant,
    base: `/fhir/${tenant}`,
    baseUrl: `${url}/fhir/${tenant}`,
    http,
    anon: plain,
    token,
    as,
    newTenant,
    async setSettings(settings, t = tenant) {
      await setTenantSettings(db.owner, t, settings);
      tenants.invalidate(t);
    },
    audit,
    jobs,
    tenants,
    async close() {
      await new Promise((r) => server.close(r));
      await jobs.close();
      await audit.close();
      await limits.close();
      await db.close();
    },
  };
}

export const FHIR_JSON = 'application/fhir+json';
