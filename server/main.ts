/**
 * Starts the server. With no configuration: embedded PGlite in ./data, a `demo` tenant with demo
 * data, http://localhost:8080. See `npm start -- --help`.
 */
import cluster from 'node:cluster';
import { loadConfig } from './config';
import type { Server } from 'node:http';
import { Database, openDatabase } from './db/connection';
import { createApp } from './http/app';
import { ensureTenant } from './http/tenants';
import { logger } from './log';
import { loadDemoData } from './demo/load-demo';
import { DEMO_CREDENTIALS, ensureDemoAuth } from './demo/demo-auth';
import { ensureSigningKey, signingKeyFile } from './auth/keys';
import { ensureMasterKey, masterKeyFile } from './crypto/master-key';

const HELP = `Usage: npm start [-- --help]

Starts the FHIR R4 server.

Environment:
  PORT                 HTTP port (default 8080)
  HOST                 bind address (default 0.0.0.0)
  PUBLIC_URL           base URL clients use (default http://localhost:PORT)
  DATABASE_URL         PostgreSQL connection string; unset = embedded PGlite in DATA_DIR
  DATABASE_APP_URL     optional connection string for the application role (no BYPASSRLS);
                       unset = connect with DATABASE_URL and SET ROLE fhir_app
  DATA_DIR             folder of the embedded database (default ./data)
  REDIS_URL            Redis for jobs (BullMQ) and rate limits (optional; checked by /readyz);
                       unset = jobs run in-process from the outbox table
  JOB_RUNNER           auto (default: this process relays/runs jobs) or off
  JOB_QUEUE_PREFIX     BullMQ key prefix in Redis (default fhir)
  WEB_CONCURRENCY      worker processes (default 1; PostgreSQL only)
  DB_POOL_MAX          connections per worker and pool (default 10; one pool for writes,
                       one for searches)
  BODY_LIMIT           largest request body (default 10mb) -> 413 above it
  IDEMPOTENCY_TTL_SECONDS  how long Idempotency-Key answers are kept (default 86400)
  DEMO                 create the demo tenant with demo data (default true; DEMO=false to skip)
  LOG_LEVEL            pino level (default info)
  SEARCH_TIMEOUT_MS    longest a search may run in the database (default 15000; 0 = no limit);
                       beyond it the answer is 503 with an OperationOutcome (timeout)
  SIGNING_KEY          private EC P-256 JWK (JSON) that signs access tokens; unset = the file
                       SIGNING_KEY_FILE (default DATA_DIR/secrets/signing-key.json), created
                       on first start. Keep it secret: whoever has it can mint tokens.
  MASTER_KEY           32 random bytes (base64 or hex) that wrap the tenants' data keys for
                       encryption at rest; unset = the file MASTER_KEY_FILE (default
                       DATA_DIR/secrets/master-key), created on first start. Back it up: without
                       it the encrypted fields (SSNs, payment ids, note text) cannot be read.
  MASTER_KEY_PREVIOUS  earlier master keys (comma-separated), still used to unwrap until
                       npm run keys:rotate has re-wrapped every tenant's keys
  ACCESS_TOKEN_TTL_SECONDS  lifetime of issued access tokens (default 3600)
  CORS_ORIGINS         extra browser origins allowed to call the API (comma-separated)
  SMTP_URL             SMTP server for all mail: sign-in codes, appointment confirmations,
                       reminders, cancellations, waitlist offers (e.g. smtp://user:pw@mail:587);
                       unset = messages go to a local outbox (/outbox/{tenant} in DEMO mode)
  MAIL_FROM            From address of those messages
  ADMIN_API_KEY        operator key for POST /admin/tenants (unset = that API is off)

Every FHIR request needs an access token (Authorization: Bearer ...), except /metadata and
/.well-known/*. For scripts on the server's machine: npm run -s token -- --help

Endpoints:
  /fhir/{tenant}       FHIR R4 base (e.g. /fhir/demo/metadata, /fhir/demo/.well-known/smart-configuration)
  /auth/{tenant}       the tenant's OAuth 2 / OpenID Connect authorization server (SMART App Launch)
  /calendar/{tenant}/{token}.ics  a practitioner's calendar feed (POST .../Practitioner/{id}/$calendar-token)
  /waitlist/{tenant}/offers/{token}  a waitlist offer's claim page (the link in the offer email)
  /outbox/{tenant}     DEMO mode without SMTP_URL: the messages that would have been emailed
  /healthz /readyz     liveness and readiness
  /metrics             Prometheus metrics
`;

async function main(): Promise<void> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(HELP);
    return;
  }
  const config = loadConfig();
  const workers = config.databaseUrl ? config.webConcurrency : 1;
  if (cluster.isPrimary) {
    if (ensureSigningKey(config)) logger.info({ file: signingKeyFile(config) }, 'created a new token signing key');
    if (ensureMasterKey(config)) {
      logger.warn({ file: masterKeyFile(config) }, 'created a new master key for encryption at rest: back it up (without it the encrypted fields cannot be read) or set MASTER_KEY');
    }
    const db = await openDatabase(config, { migrate: true });
    if (config.demo) {
      await ensureTenant(db.owner, 'demo', 'Demo practice', { practicePhone: '+1-555-0100' });
      await loadDemoData(db.app, config);
      await ensureDemoAuth(db.app, config);
    }
    if (workers > 1) {
      await db.close();
      for (let i = 0; i < workers; i++) cluster.fork();
      let stopping = false;
      cluster.on('exit', (w, code) => {
        if (stopping) return;
        logger.error({ worker: w.process.pid, code }, 'worker exited; starting a new one');
        cluster.fork();
      });
      for (const sig of ['SIGTERM', 'SIGINT'] as const) {
        process.on(sig, () => {
          stopping = true;
          for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
          setTimeout(() => process.exit(0), 11_000).unref();
          cluster.on('exit', () => {
            if (!Object.values(cluster.workers ?? {}).some((w) => w && !w.isDead())) process.exit(0);
          });
        });
      }
      printBanner(config, workers, db.engine);
      return;
    }
    await serve(config, db);
    printBanner(config, 1, db.engine);
    return;
  }
  const db = await openDatabase(config, { migrate: false });
  await serve(config, db);
}

async function serve(config: ReturnType<typeof loadConfig>, db: Database): Promise<void> {
  let redisPing: (() => Promise<void>) | undefined;
  if (config.redisUrl) redisPing = await redisProbe(config.redisUrl);
  const { app, audit, limits, jobs } = createApp({ config, db: db.app, redisPing });
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(config.port, config.host, () => resolve(s));
  });
  // Graceful stop: finish in-flight requests, then close the database (PGlite flushes to disk).
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    server.close(() => {
      // Running jobs finish, and the audit events of the last requests are sealed, before the
      // database closes.
      jobs
        .close()
        .catch((err) => logger.error({ err: { message: err?.message } }, 'stopping the job runner failed'))
        .then(() => audit.close())
        .catch((err) => logger.error({ err: { message: err?.message } }, 'audit flush on shutdown failed'))
        .finally(() => limits.close().finally(() => db.close().finally(() => process.exit(0))));
    });
    setTimeout(() => process.exit(0), 10_000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function redisProbe(url: string): Promise<() => Promise<void>> {
  const net = await import('node:net');
  const u = new URL(url);
  return () =>
    new Promise<void>((resolve, reject) => {
      const s = net.connect(Number(u.port || 6379), u.hostname);
      s.setTimeout(1000, () => {
        s.destroy();
        reject(new Error('timeout'));
      });
      s.on('error', reject);
      s.on('connect', () => s.write('PING\r\n'));
      s.on('data', (d) => {
        s.end();
        if (d.toString().startsWith('+PONG') || d.toString().startsWith('-NOAUTH')) resolve();
        else reject(new Error('unexpected reply'));
      });
    });
}

/** The command that prints a token for this server (same PORT / DATA_DIR as it was started with). */
function tokenCommand(config: ReturnType<typeof loadConfig>): string {
  const env: string[] = [];
  if (process.env.PORT) env.push(`PORT=${process.env.PORT}`);
  if (process.env.PUBLIC_URL) env.push(`PUBLIC_URL=${process.env.PUBLIC_URL}`);
  if (process.env.DATA_DIR) env.push(`DATA_DIR=${process.env.DATA_DIR}`);
  return `${env.length ? env.join(' ') + ' ' : ''}npm run -s token -- --tenant demo --scope 'system/*.*'`;
}

function printBanner(config: ReturnType<typeof loadConfig>, workers: number, engine: string): void {
  const lines = [
    '',
    `  FHIR R4 server ready (${engine === 'pglite' ? `embedded PGlite in ${config.dataDir}` : 'PostgreSQL'}, ${workers} worker${workers > 1 ? 's' : ''})`,
    `  FHIR endpoint:  ${config.publicUrl}/fhir/demo`,
    `  Capability:     ${config.publicUrl}/fhir/demo/metadata`,
    `  Portal:         ${config.publicUrl}/`,
    `  Access token:   ${tokenCommand(config)}`,
    ...(config.demo
      ? [
          `  Sign-in (demo): ${config.publicUrl}/  (the portal signs in through ${config.publicUrl}/auth/demo)`,
          `    practitioner  ${DEMO_CREDENTIALS.practitioner.email} / ${DEMO_CREDENTIALS.practitioner.password}`,
          `    admin         ${DEMO_CREDENTIALS.admin.email} / ${DEMO_CREDENTIALS.admin.password}`,
          `    TOTP secret   ${DEMO_CREDENTIALS.totpSecret} (demo mode shows the current code on the page)`,
          `    patient       ${DEMO_CREDENTIALS.patient.email} (code by email: ${config.smtpUrl ? 'sent over SMTP_URL' : `${config.publicUrl}/outbox/demo`})`,
          `  Mail:           ${config.smtpUrl ? 'over SMTP_URL' : `no SMTP_URL: every message (sign-in codes, confirmations, reminders) goes to ${config.publicUrl}/outbox/demo`}`,
        ]
      : []),
    `  Jobs:           ${config.redisUrl ? 'BullMQ on REDIS_URL (outbox relay)' : 'in-process runner (no REDIS_URL)'}`,
    `  Health:         ${config.publicUrl}/healthz   Metrics: ${config.publicUrl}/metrics`,
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((err) => {
  logger.fatal({ err: { type: err?.name, message: err?.message, stack: err?.stack } }, 'failed to start');
  process.exit(1);
});
