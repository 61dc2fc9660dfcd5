/** Express binding of the FHIR interactions under /fhir/:tenant. */
import express, { NextFunction, Request, Response } from 'express';
import type { Knex } from 'knex';
import type { Config } from '../config';
import { FhirError } from '../fhir/errors';
import { errorToResponse } from '../fhir/error-response';
import { handle } from '../fhir/interactions';
import '../fhir/bundle';
import { requestHash, withIdempotency } from '../fhir/idempotency';
import type { FhirRequest, FhirResponse, TenantContext } from '../fhir/types';
import { queryPairs } from '../search/params';
import { TenantDirectory } from './tenants';
import { routeTemplate } from './route-template';
import { Access } from '../auth/access';
import { AccessClaims, InvalidToken, TokenVerifier } from '../auth/tokens';
import { AccessDenied } from '../fhir/errors';
import type { AuditTrail } from '../audit/trail';
import { auditEventFor } from '../audit/fhir-requests';
import { logger } from '../log';
import type { RateLimits } from './rate-limit';
import { smartConfiguration } from '../auth/smart-config';

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const JSON_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json-patch+json', 'text/json']);

function acceptable(req: Request): boolean {
  const fmt = typeof req.query._format === 'string' ? req.query._format : undefined;
  if (fmt) return ['json', 'application/json', 'application/fhir+json', 'text/json'].includes(fmt.split(';')[0].trim());
  const accept = req.headers.accept;
  if (!accept) return true;
  return accept.split(',').some((a) => {
    const t = a.split(';')[0].trim().toLowerCase();
    return t === '*/*' || t === 'application/*' || JSON_TYPES.has(t) || t === 'application/fhir+ndjson';
  });
}

function parseBody(req: Request): unknown {
  const raw = req.body as Buffer | undefined;
  if (!raw || !Buffer.isBuffer(raw) || raw.length === 0) return undefined;
  const ct = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (ct === 'application/x-www-form-urlencoded') return undefined; // handled as search parameters
  if (ct && !JSON_TYPES.has(ct)) {
    throw FhirError.of(415, 'not-supported', `Content-Type "${ct}" is not supported; send application/fhir+json`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw FhirError.of(400, 'structure', `The body is not valid JSON: ${(e as Error).message}`);
  }
  checkJsonShape(parsed);
  return parsed;
}

/** Deeper than any real resource; deeper bodies would overflow the stack when serialised. */
const MAX_JSON_DEPTH = 100;

/**
 * Rejects bodies we could not store faithfully: numbers beyond double range (JSON.parse turns
 * 1e400 into Infinity, which would be stored as null) and absurd nesting. Iterative on purpose.
 */
function checkJsonShape(root: unknown): void {
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw FhirError.of(400, 'structure', 'The body holds a number outside the range this server can store');
    } else if (v !== null && typeof v === 'object') {
      if (depth > MAX_JSON_DEPTH) throw FhirError.of(400, 'structure', `The body is nested deeper than ${MAX_JSON_DEPTH} levels`);
      for (const x of Array.isArray(v) ? v : Object.values(v)) stack.push([x, depth + 1]);
    }
  }
}

function formParams(req: Request): Record<string, string[]> | undefined {
  const ct = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (ct !== 'application/x-www-form-urlencoded' || !Buffer.isBuffer(req.body)) return undefined;
  const out: Record<string, string[]> = {};
  for (const [k, v] of new URLSearchParams(req.body.toString('utf8'))) (out[k] ??= []).push(v);
  return out;
}

function header(req: Request, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

/** Writes the response; returns the body text sent (for the audit record). */
function send(req: Request, res: Response, out: FhirResponse): string | undefined {
  for (const [k, v] of Object.entries(out.headers)) res.setHeader(k, v);
  res.status(out.status);
  if (out.status === 304 || (out.body === undefined && out.json === undefined)) {
    res.end();
    return undefined;
  }
  res.setHeader('Content-Type', FHIR_JSON);
  const pretty = req.query._pretty === 'true';
  if (out.json !== undefined && !pretty) {
    res.end(out.json);
    return out.json;
  }
  const body = out.json !== undefined ? JSON.parse(out.json) : out.body;
  const text = pretty ? JSON.stringify(body, null, 2) : JSON.stringify(body);
  res.end(text);
  return text;
}

/** Paths anyone may read without a token: discovery documents. */
const PUBLIC_PATHS = new Set(['metadata', '.well-known']);

function unauthorized(baseUrl: string, message: string, invalid: boolean): FhirError {
  const e = FhirError.of(401, 'login', message);
  // RFC 6750 section 3: no error code when the request carried no credentials at all.
  e.headers['WWW-Authenticate'] = invalid
    ? `Bearer realm="${baseUrl}", error="invalid_token", error_description="${message.replace(/"/g, "'")}"`
    : `Bearer realm="${baseUrl}"`;
  return e;
}

const accessByClaims = new WeakMap<AccessClaims, Access>();

/** The caller's Access from `Authorization: Bearer`, or a 401/403. */
async function authenticate(req: Request, verifier: TokenVerifier, tenant: string, baseUrl: string): Promise<Access> {
  const h = req.headers.authorization;
  if (!h) throw unauthorized(baseUrl, 'This FHIR endpoint needs an access token (Authorization: Bearer ...); see /.well-known/smart-configuration', false);
  const m = /^Bearer\s+([A-Za-z0-9\-_.~+/]+=*)\s*$/i.exec(h);
  if (!m) throw unauthorized(baseUrl, 'The Authorization header must be "Bearer <access token>"', true);
  let claims;
  try {
    claims = await verifier.verify(m[1]);
  } catch (e) {
    if (e instanceof InvalidToken) throw unauthorized(baseUrl, e.message, true);
    throw e;
  }
  // The verifier hands back the same claims object for the same token: parse its scopes once.
  let access = accessByClaims.get(claims);
  if (!access) accessByClaims.set(claims, (access = new Access(claims)));
  if (claims.tenant !== tenant) {
    // A valid token of another practice: refused, and recorded as a security event of this one.
    throw Object.assign(AccessDenied.forbidden(`This access token belongs to another tenant; it cannot be used at ${baseUrl}`), { access });
  }
  return access;
}

export interface RouterDeps {
  verifier: TokenVerifier;
  audit?: AuditTrail;
  limits?: RateLimits;
}

export function fhirRouter(config: Config, db: Knex, tenants: TenantDirectory, { verifier, audit, limits }: RouterDeps): express.Router {
  const router = express.Router({ mergeParams: true });
  router.use(
    express.raw({ type: () => true, limit: config.bodyLimitBytes }),
  );

  router.use(async (req: Request, res: Response, next: NextFunction) => {
    let segments: string[] = [];
    let fr: FhirRequest | undefined;
    let access: Access | undefined;
    let tenantId: string | undefined;
    const record = (out: FhirResponse, text: string | undefined, err?: unknown) => {
      if (!audit || !fr || !tenantId) return;
      try {
        const security = err instanceof AccessDenied;
        const event = auditEventFor({
          tenant: tenantId,
          access: access ?? (err as { access?: Access } | undefined)?.access,
          ip: req.ip,
          req: fr,
          queryString: req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?')) : undefined,
          status: out.status,
          responseText: text,
          requestBody: Buffer.isBuffer(req.body) && req.body.length ? req.body : undefined,
          location: out.headers.Location,
          security,
          message: err instanceof FhirError ? err.message : undefined,
        });
        if (event) audit.record(tenantId, event);
      } catch (e) {
        logger.error({ err: { message: (e as Error).message } }, 'could not build the audit event');
      }
    };
    try {
      try {
        segments = req.path.split('/').filter(Boolean).map(decodeURIComponent);
      } catch {
        throw FhirError.of(400, 'invalid', 'The URL path is not validly percent-encoded');
      }
      res.locals.route = routeTemplate(segments);
      if (segments[0] === '.well-known' && segments[1] === 'smart-configuration' && segments.length === 2 && req.method === 'GET') {
        // SMART discovery: always JSON whatever Accept says, no token (conformance.html).
        res.locals.route = '/fhir/:tenant/.well-known/smart-configuration';
        if (!(await tenants.get(req.params.tenant))) throw FhirError.of(404, 'not-found', `Unknown tenant "${req.params.tenant}"`);
        res.setHeader('Cache-Control', 'public, max-age=300');
        res.status(200).json(smartConfiguration(config, req.params.tenant));
        return;
      }
      if (!acceptable(req)) throw FhirError.of(406, 'not-supported', 'This server speaks FHIR JSON only (application/fhir+json)');
      const tenant = await tenants.get(req.params.tenant);
      if (!tenant) throw FhirError.of(404, 'not-found', `Unknown tenant "${req.params.tenant}"`);
      tenantId = tenant.id;
      if (limits) await limits.tenantRequest(tenantId, tenant.settings.rateLimitPerMinute);
      res.locals.tenant = tenantId;
      const ctx: TenantContext = {
        tenant: tenantId,
        baseUrl: `${config.publicUrl}/fhir/${tenantId}`,
        config,
        db,
        settings: tenant.settings,
      };
      const method = req.method as FhirRequest['method'];
      const form = method === 'POST' ? formParams(req) : undefined;
      fr = {
        method,
        segments,
        query: [],
        headers: {},
      };
      if (!PUBLIC_PATHS.has(segments[0] ?? '')) access = ctx.access = await authenticate(req, verifier, tenantId, ctx.baseUrl);
      const full: FhirRequest = {
        method,
        segments,
        query: queryPairs(req.query as Record<string, unknown>, form),
        headers: {
          ifMatch: header(req, 'if-match'),
          ifNoneMatch: header(req, 'if-none-match'),
          ifModifiedSince: header(req, 'if-modified-since'),
          ifNoneExist: header(req, 'if-none-exist'),
          prefer: header(req, 'prefer'),
          contentType: header(req, 'content-type'),
        },
        body: ['POST', 'PUT', 'PATCH'].includes(method) ? parseBody(req) : undefined,
      };
      fr = full;
      const key = header(req, 'idempotency-key');
      const out =
        key && method === 'POST'
          ? await withIdempotency(ctx, key, requestHash(method, req.originalUrl, req.body as Buffer), (c) => handle(c, full))
          : await handle(ctx, full);
      record(out, send(req, res, out));
    } catch (err) {
      const out = errorToResponse(err);
      record(out, send(req, res, out), err);
    }
  });
  return router;
}

/** Errors raised before our handler (body too large, aborted uploads) as OperationOutcome. */
export function fhirBodyErrors(err: unknown, req: Request, res: Response, next: NextFunction): void {
  if (res.headersSent) return next(err);
  const e = err as { type?: string; status?: number; limit?: number };
  let out: FhirResponse;
  if (e.type === 'entity.too.large') {
    out = errorToResponse(FhirError.of(413, 'too-costly', `The request body exceeds the limit of ${e.limit} bytes`));
  } else if (e.status && e.status >= 400 && e.status < 500) {
    out = errorToResponse(FhirError.of(e.status, 'invalid', 'The request body could not be read'));
  } else out = errorToResponse(err);
  send(req, res, out);
}
