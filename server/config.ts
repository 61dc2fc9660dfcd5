/** Runtime configuration, read once from the environment. */
import path from 'node:path';

export interface Config {
  port: number;
  host: string;
  /** Postgres connection string; when absent the embedded PGlite database in dataDir is used. */
  databaseUrl?: string;
  /** Optional connection string for the application role (no BYPASSRLS). Without it the server
   * connects with databaseUrl and switches to the `fhir_app` role with SET ROLE. */
  databaseAppUrl?: string;
  dataDir: string;
  redisUrl?: string;
  /** Absolute base URL clients use to reach the server (no trailing slash). */
  publicUrl: string;
  bodyLimit: string;
  bodyLimitBytes: number;
  idempotencyTtlSeconds: number;
  webConcurrency: number;
  logLevel: string;
  demo: boolean;
  maxCount: number;
  /** Longest a search may run in the database, ms (0 = no limit); beyond it: 503 timeout. */
  searchTimeoutMs: number;
  defaultCount: number;
  dbPoolMax: number;
  /** Private JWK (JSON text) that signs access tokens; see server/auth/keys.ts. */
  signingKey?: string;
  /** File holding that key when signingKey is not set (default DATA_DIR/secrets/signing-key.json). */
  signingKeyFile?: string;
  /** Lifetime of access tokens issued by this server, seconds. */
  accessTokenTtlSeconds: number;
  /** Extra origins (comma-separated CORS_ORIGINS) allowed to call the API from a browser. */
  corsOrigins: string[];
  /** SMTP server for every outgoing mail (sign-in codes, notifications); unset = the local outbox. */
  smtpUrl?: string;
  /** From address of those mails. */
  mailFrom: string;
  /** Background jobs (server/jobs): 'auto' runs them in this process (BullMQ worker + outbox relay
   * with REDIS_URL, the in-process runner without), 'off' leaves them to other processes. */
  jobRunner: 'auto' | 'off';
  /** BullMQ key prefix in Redis (JOB_QUEUE_PREFIX). */
  jobQueuePrefix: string;
  /** Operator key for the server-wide admin API (POST /admin/tenants); unset = that API is off. */
  adminApiKey?: string;
  /** Master key (32 bytes, base64 or hex) that wraps the tenants' data keys; see server/crypto/. */
  masterKey?: string;
  /** File holding that key when masterKey is not set (default DATA_DIR/secrets/master-key). */
  masterKeyFile?: string;
  /** Earlier master keys (MASTER_KEY_PREVIOUS, comma-separated): still unwrap, never wrap. */
  masterKeyPrevious: string[];
}

function parseBytes(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?$/i.exec(v.trim());
  if (!m) throw new Error(`Invalid size "${v}" (use e.g. 10mb)`);
  const n = Number(m[1]);
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult = unit === 'gb' ? 1 << 30 : unit === 'mb' ? 1 << 20 : unit === 'kb' ? 1 << 10 : 1;
  return Math.floor(n * mult);
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const port = Number(env.PORT ?? 8080);
  const host = env.HOST ?? '0.0.0.0';
  const bodyLimit = env.BODY_LIMIT ?? '10mb';
  return {
    port,
    host,
    databaseUrl: env.DATABASE_URL || undefined,
    databaseAppUrl: env.DATABASE_APP_URL || undefined,
    dataDir: path.resolve(env.DATA_DIR ?? path.join(process.cwd(), 'data')),
    redisUrl: env.REDIS_URL || undefined,
    publicUrl: (env.PUBLIC_URL ?? `http://localhost:${port}`).replace(/\/+$/, ''),
    bodyLimit,
    bodyLimitBytes: parseBytes(bodyLimit),
    idempotencyTtlSeconds: Number(env.IDEMPOTENCY_TTL_SECONDS ?? 24 * 3600),
    webConcurrency: Math.max(1, Number(env.WEB_CONCURRENCY ?? 1)),
    logLevel: env.LOG_LEVEL ?? 'info',
    demo: (env.DEMO ?? 'true') !== 'false',
    maxCount: Number(env.MAX_COUNT ?? 1000),
    searchTimeoutMs: Math.max(0, Number(env.SEARCH_TIMEOUT_MS ?? 15000) || 0),
    defaultCount: Number(env.DEFAULT_COUNT ?? 50),
    dbPoolMax: Number(env.DB_POOL_MAX ?? 10),
    signingKey: env.SIGNING_KEY || undefined,
    signingKeyFile: env.SIGNING_KEY_FILE || undefined,
    accessTokenTtlSeconds: Number(env.ACCESS_TOKEN_TTL_SECONDS ?? 3600),
    smtpUrl: env.SMTP_URL || undefined,
    mailFrom: env.MAIL_FROM ?? 'FHIR practice server <no-reply@localhost>',
    adminApiKey: env.ADMIN_API_KEY || undefined,
    masterKey: env.MASTER_KEY || undefined,
    masterKeyFile: env.MASTER_KEY_FILE || undefined,
    masterKeyPrevious: (env.MASTER_KEY_PREVIOUS ?? '').split(',').map((k) => k.trim()).filter(Boolean),
    jobRunner: env.JOB_RUNNER === 'off' ? 'off' : 'auto',
    jobQueuePrefix: env.JOB_QUEUE_PREFIX || 'fhir',
    corsOrigins: (env.CORS_ORIGINS ?? '').split(',').map((o) => o.trim().replace(/\/+$/, '')).filter(Boolean),
  };
}
