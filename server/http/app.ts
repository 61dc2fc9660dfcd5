/** The express application: FHIR API per tenant, health, readiness, metrics, portal. */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import express, { NextFunction, Request, Response } from 'express';
import type { Knex } from 'knex';
import type { Config } from '../config';
import { logger } from '../log';
import { fhirBodyErrors, fhirRouter } from './fhir-router';
import { httpDuration, httpRequests, registry as metrics, watchPool } from './metrics';
import { TenantDirectory } from './tenants';
import { loadSigningKey } from '../auth/keys';
import { TokenVerifier } from '../auth/tokens';
import { AuditTrail } from '../audit/trail';
import { auditSignIns } from '../audit/sign-in';
import helmet from 'helmet';
import cors, { CorsRequest } from 'cors';
import { RateLimits } from './rate-limit';
import { AuthServers, authRouter, operatorRouter } from '../auth/router';
import { configureEncryption } from '../crypto/keyring';
import { createJobs, Jobs, JobsOptions } from '../jobs';
import type { Clock } from '../jobs/outbox';
import { calendarRouter } from '../calendar/feed';
import { waitlistRouter } from '../scheduling/claim';
import { outboxRouter } from '../mail/outbox-page';

export interface AppDeps {
  config: Config;
  db: Knex;
  /** Optional readiness probe for Redis (added when REDIS_URL is configured). */
  redisPing?: () => Promise<void>;
  /** Background jobs: options and clock of the runner (tests); started unless JOB_RUNNER=off. */
  jobs?: JobsOptions & { clock?: Clock };
}

/**
 * CORS for browser apps: allowed origins are CORS_ORIGINS plus the tenant's registered SMART app
 * origins (settings.corsOrigins). Bearer tokens, not cookies, so no credentials mode.
 */
function corsFor(config: Config, tenants: TenantDirectory) {
  return cors((req: CorsRequest & { originalUrl?: string }, cb) => {
    const origin = req.headers.origin;
    const slug = /^\/fhir\/([^/?]+)/.exec(req.originalUrl ?? '')?.[1];
    const allow = async () => {
      if (!origin) return false;
      if (config.corsOrigins.includes(origin) || origin === config.publicUrl) return true;
      const t = slug ? await tenants.get(slug) : undefined;
      return !!t?.settings.corsOrigins?.includes(origin);
    };
    allow().then(
      (ok) =>
        cb(null, {
          origin: ok,
          methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
          allowedHeaders: ['Authorization', 'Content-Type', 'Accept', 'If-Match', 'If-None-Match', 'If-None-Exist', 'If-Modified-Since', 'Prefer', 'Idempotency-Key', 'X-Request-Id'],
          exposedHeaders: ['ETag', 'Location', 'Content-Location', 'Last-Modified', 'X-Request-Id', 'Retry-After', 'WWW-Authenticate'],
          maxAge: 600,
        }),
      () => cb(null, { origin: false }),
    );
  });
}

export function createApp(deps: AppDeps): {
  app: express.Express;
  tenants: TenantDirectory;
  audit: AuditTrail;
  limits: RateLimits;
  authServers: AuthServers;
  jobs: Jobs;
} {
  const { config, db } = deps;
  configureEncryption(config);
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('trust proxy', true);
  // Security headers. HSTS is sent always (browsers only honour it over HTTPS, where the
  // TLS-terminating proxy in front of this server serves it).
  app.use(
    helmet({
      strictTransportSecurity: { maxAge: 31536000, includeSubDomains: true },
      // No form-action: the sign-in form's answer redirects to the app's redirect_uri on another
      // origin. Inline styles: the sign-in pages carry theirs.
      contentSecurityPolicy: {
        useDefaults: false,
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: ["'self'"],
          styleSrc: ["'self'", "'unsafe-inline'"],
          imgSrc: ["'self'", 'data:'],
          connectSrc: ["'self'"],
          objectSrc: ["'none'"],
          baseUri: ["'self'"],
          frameAncestors: ["'none'"],
        },
      },
      crossOriginResourcePolicy: { policy: 'same-site' },
    }),
  );
  const tenants = new TenantDirectory(db);
  watchPool(db);

  // request id + structured access log (ids, routes, statuses; never names or bodies)
  app.use((req: Request, res: Response, next: NextFunction) => {
    const incoming = req.headers['x-request-id'];
    const id = typeof incoming === 'string' && /^[A-Za-z0-9\-_.]{1,128}$/.test(incoming) ? incoming : randomUUID();
    res.setHeader('X-Request-Id', id);
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const route = (res.locals.route as string | undefined) ?? (req.path.startsWith('/fhir/') ? '/fhir/:tenant/*' : req.route?.path ?? 'other');
      const labels = { method: req.method, route, status: String(res.statusCode) };
      httpRequests.inc(labels);
      httpDuration.observe(labels, seconds);
      if (route !== '/metrics' && route !== '/healthz') {
        logger.info({ reqId: id, method: req.method, route, status: res.statusCode, ms: Math.round(seconds * 1e4) / 10, tenant: res.locals.tenant }, 'request');
      }
    });
    next();
  });

  app.get('/healthz', (_req, res) => {
    res.locals.route = '/healthz';
    res.json({ status: 'ok' });
  });

  app.get('/readyz', async (_req, res) => {
    res.locals.route = '/readyz';
    const checks: Record<string, string> = {};
    let ok = true;
    try {
      await db.raw('select 1');
      checks.database = 'ok';
    } catch {
      checks.database = 'unreachable';
      ok = false;
    }
    if (deps.redisPing) {
      try {
        await deps.redisPing();
        checks.redis = 'ok';
      } catch {
        checks.redis = 'unreachable';
        ok = false;
      }
    }
    res.status(ok ? 200 : 503).json({ status: ok ? 'ok' : 'unavailable', checks });
  });

  app.get('/metrics', async (_req, res) => {
    res.locals.route = '/metrics';
    res.setHeader('Content-Type', metrics.contentType);
    res.end(await metrics.metrics());
  });

  const key = loadSigningKey(config);
  const verifier = new TokenVerifier(config, key);
  const audit = new AuditTrail(db);
  audit.onClose(auditSignIns(audit));
  const limits = new RateLimits(config.redisUrl);
  app.use('/fhir/:tenant', corsFor(config, tenants), fhirRouter(config, db, tenants, { verifier, audit, limits }), fhirBodyErrors);
  const authDeps = { config, db, tenants, key, verifier };
  const authServers = new AuthServers(authDeps);
  app.use('/auth/:tenant', authRouter(authDeps, authServers));
  app.use('/admin', operatorRouter(config, db, tenants));
  app.use('/calendar', calendarRouter({ config, db, tenants, audit }));
  app.use('/waitlist', waitlistRouter({ config, db, tenants, audit, limits }));
  app.use('/outbox', outboxRouter(config));
  // Outbox relay / in-process runner (server/jobs): stopped by jobs.close().
  const jobs = createJobs({ config, db, tenants, clock: deps.jobs?.clock }, deps.jobs ?? {});
  if (config.jobRunner !== 'off') jobs.start();

  app.use(express.static(path.resolve(__dirname, '../../web/public'), { index: 'index.html' }));

  app.use((req, res) => {
    res.locals.route = 'not-found';
    res.status(404).type('application/fhir+json').send(
      JSON.stringify({
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'not-found', diagnostics: `Nothing at ${req.method} ${req.path}; the FHIR base is /fhir/{tenant}` }],
      }),
    );
  });
  return { app, tenants, audit, limits, authServers, jobs };
}
