/**
 * Everything under /auth/{tenant}: the sign-in pages, the admin API (clients, users, launch
 * contexts), token introspection, the demo outbox, the SMART style, and oidc-provider itself
 * (authorize, token, jwks, userinfo, revocation, logout, .well-known/openid-configuration).
 * Plus the operator API /admin/tenants (ADMIN_API_KEY).
 */
import { timingSafeEqual, randomBytes } from 'node:crypto';
import express, { NextFunction, Request, Response } from 'express';
import type { Knex } from 'knex';
import type { Config } from '../config';
import type { TenantDirectory } from '../http/tenants';
import { ClientError, registerClient, withoutSecret } from './clients';
import { FederationClients, FederationConfigError, isLocalDevelopment, publicFederation, SECRET_PURPOSE, setFederation, validateFederation } from './federation';
import { interactionRouter } from './interactions';
import type { SigningKey } from './keys';
import { createTenantAuth, LAUNCH, SMART_CONTEXT, TenantAuth } from './provider';
import { isRole } from './roles';
import { AccessClaims, InvalidToken, TokenVerifier } from './tokens';
import { createUser, listUsers, publicUser } from './users';
import { createTenantWithAdmin } from './tenant-admin';
import { openSecretIn } from '../crypto/at-rest';
import { emitAuthEvent } from './events';

export interface AuthDeps {
  config: Config;
  db: Knex;
  tenants: TenantDirectory;
  key: SigningKey;
  verifier: TokenVerifier;
}

/** Per-tenant authorization servers, created on first use. */
export class AuthServers {
  private cache = new Map<string, TenantAuth>();
  /** The tenants' external identity providers (discovered configurations). */
  readonly federation: FederationClients;
  constructor(private deps: AuthDeps) {
    this.federation = new FederationClients((tenant, sealed) => openSecretIn(deps.db, tenant, SECRET_PURPOSE, sealed));
  }
  get(tenant: string): TenantAuth {
    let a = this.cache.get(tenant);
    if (!a) {
      a = createTenantAuth(this.deps.config, this.deps.db, this.deps.key, tenant);
      this.cache.set(tenant, a);
    }
    return a;
  }
}

const STAFF = new Set(['admin', 'practitioner', 'physician', 'nurse']);

function jsonError(res: Response, status: number, error: string, description: string) {
  res.status(status).json({ error, error_description: description });
}

export function authRouter(deps: AuthDeps, servers: AuthServers): express.Router {
  const { config, db, tenants, verifier } = deps;
  const router = express.Router({ mergeParams: true });

  router.use(async (req: Request<any>, res: Response, next: NextFunction) => {
    try {
      res.locals.route = '/auth/:tenant/*';
      const t = await tenants.get(req.params.tenant);
      if (!t) return jsonError(res, 404, 'not_found', `Unknown tenant "${req.params.tenant}"`);
      res.locals.tenant = t.id;
      res.locals.tenantRecord = t;
      next();
    } catch (e) {
      next(e);
    }
  });

  router.use(interactionRouter({ config, db, auth: (t) => servers.get(t), federation: servers.federation }));

  /** The caller's token (any valid token of this tenant), or a 401. */
  async function bearer(req: Request<any>, res: Response): Promise<AccessClaims | undefined> {
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (!m) {
      res.setHeader('WWW-Authenticate', 'Bearer');
      jsonError(res, 401, 'invalid_token', 'an access token is required');
      return undefined;
    }
    try {
      const c = await verifier.verify(m[1]);
      if (c.tenant !== req.params.tenant) {
        jsonError(res, 403, 'insufficient_scope', 'the token belongs to another tenant');
        return undefined;
      }
      return c;
    } catch (e) {
      if (!(e instanceof InvalidToken)) throw e;
      res.setHeader('WWW-Authenticate', 'Bearer error="invalid_token"');
      jsonError(res, 401, 'invalid_token', e.message);
      return undefined;
    }
  }
  const requireRole = (roles: Set<string>) => async (req: Request<any>, res: Response, next: NextFunction) => {
    try {
      const c = await bearer(req, res);
      if (!c) return;
      if (!c.role || !roles.has(c.role)) return jsonError(res, 403, 'insufficient_scope', `this needs a signed-in ${[...roles].join(' or ')}`);
      res.locals.claims = c;
      next();
    } catch (e) {
      next(e);
    }
  };
  const json = express.json({ limit: '64kb' });
  const onlyAdmin = requireRole(new Set(['admin']));
  /** Admin routes: an admin token, and every change (not the reads) leaves an admin-action event. */
  const admin = (req: Request<any>, res: Response, next: NextFunction) =>
    onlyAdmin(req, res, () => {
      if (req.method !== 'GET') {
        res.on('finish', () => {
          const c = res.locals.claims as { sub?: string; role?: string; client_id?: string } | undefined;
          const target = req.params.id ? ` ${req.params.id}` : '';
          emitAuthEvent({
            type: 'admin-action',
            tenant: req.params.tenant,
            outcome: res.statusCode < 400 ? 'success' : 'failure',
            userId: c?.sub,
            role: c?.role,
            clientId: c?.client_id,
            ip: req.ip,
            reason: `${req.method} ${req.baseUrl.replace(/^\/auth\/[^/]+/, '')}${req.route?.path ?? req.path}${target} -> ${res.statusCode}`,
          });
        });
      }
      next();
    });
  const auth = (req: Request<any>) => servers.get(req.params.tenant);

  // --- client registration (tenant admin) ---
  router.post('/admin/clients', json, admin, async (req, res, next) => {
    try {
      res.status(201).json(await registerClient(auth(req), req.body ?? {}));
    } catch (e) {
      if (e instanceof ClientError) return jsonError(res, 400, 'invalid_client_metadata', e.message);
      next(e);
    }
  });
  router.get('/admin/clients', admin, async (req, res, next) => {
    try {
      res.json((await auth(req).store.list('Client')).map((c) => withoutSecret(c.payload)));
    } catch (e) {
      next(e);
    }
  });
  router.delete('/admin/clients/:id', admin, async (req, res, next) => {
    try {
      await auth(req).store.destroy('Client', req.params.id);
      res.status(204).end();
    } catch (e) {
      next(e);
    }
  });

  // --- users (tenant admin) ---
  router.post('/admin/users', json, admin, async (req, res, next) => {
    try {
      const b = req.body ?? {};
      if (!isRole(b.role)) return jsonError(res, 400, 'invalid_request', 'role must be admin, practitioner, physician, nurse or patient');
      const u = await createUser(db, req.params.tenant, { email: String(b.email ?? ''), role: b.role, name: b.name, password: b.password, fhirUser: b.fhirUser });
      res.status(201).json(publicUser(u));
    } catch (e) {
      if ((e as { code?: string }).code === '23505') return jsonError(res, 409, 'conflict', 'a user with this email exists');
      if (e instanceof Error && !(e as { code?: string }).code) return jsonError(res, 400, 'invalid_request', e.message);
      next(e);
    }
  });
  router.get('/admin/users', admin, async (req, res, next) => {
    try {
      res.json((await listUsers(db, req.params.tenant)).map(publicUser));
    } catch (e) {
      next(e);
    }
  });

  // --- the practice's external identity provider (tenant admin); the secret is never returned ---
  router.get('/admin/federation', admin, async (req, res, next) => {
    try {
      const t = await tenants.get(req.params.tenant);
      const f = t?.settings.federation;
      if (!f) return jsonError(res, 404, 'not_found', 'no identity provider is configured');
      res.setHeader('Cache-Control', 'no-store');
      res.json(publicFederation(f));
    } catch (e) {
      next(e);
    }
  });
  router.put('/admin/federation', json, admin, async (req, res, next) => {
    try {
      tenants.invalidate(req.params.tenant);
      const previous = (await tenants.get(req.params.tenant))?.settings.federation;
      const f = validateFederation(req.body, previous, { allowHttpLoopback: isLocalDevelopment(config.publicUrl) });
      await setFederation(db, req.params.tenant, f);
      tenants.invalidate(req.params.tenant);
      servers.federation.forget(req.params.tenant);
      res.setHeader('Cache-Control', 'no-store');
      res.json(publicFederation(f));
    } catch (e) {
      if (e instanceof FederationConfigError) return jsonError(res, 400, 'invalid_request', e.message);
      next(e);
    }
  });
  router.delete('/admin/federation', admin, async (req, res, next) => {
    try {
      await setFederation(db, req.params.tenant, undefined);
      tenants.invalidate(req.params.tenant);
      servers.federation.forget(req.params.tenant);
      res.status(204).end();
    } catch (e) {
      next(e);
    }
  });

  // --- EHR launch contexts (staff) ---
  router.post('/launch', json, requireRole(STAFF), async (req, res, next) => {
    try {
      const b = req.body ?? {};
      const ref = /^[A-Za-z0-9\-.]{1,64}$/;
      if (!ref.test(String(b.patient ?? ''))) return jsonError(res, 400, 'invalid_request', 'patient (a Patient id) is required');
      if (b.encounter !== undefined && !ref.test(String(b.encounter))) return jsonError(res, 400, 'invalid_request', 'encounter must be an Encounter id');
      const id = randomBytes(18).toString('base64url');
      const ttl = 3600;
      await auth(req).store.put(LAUNCH, id, { patient: b.patient, encounter: b.encounter, needBanner: b.need_patient_banner ?? false, by: res.locals.claims.sub }, ttl);
      res.status(201).json({ launch: id, expires_in: ttl, iss: `${config.publicUrl}/fhir/${req.params.tenant}` });
    } catch (e) {
      next(e);
    }
  });

  // --- token introspection (RFC 7662), for JWT access tokens and refresh tokens ---
  router.post('/token/introspection', express.urlencoded({ extended: false, limit: '16kb' }), async (req, res, next) => {
    try {
      res.setHeader('Cache-Control', 'no-store');
      const a = auth(req);
      // The caller: a confidential client (HTTP Basic) or anyone holding a valid token of this tenant.
      const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      if (basic) {
        const [id, secret] = Buffer.from(basic[1], 'base64').toString('utf8').split(':').map((s) => decodeURIComponent(s));
        const c = id ? await a.store.get('Client', id) : undefined;
        const ok = c?.client_secret && secret && c.client_secret.length === secret.length && timingSafeEqual(Buffer.from(c.client_secret), Buffer.from(secret));
        if (!ok) return jsonError(res, 401, 'invalid_client', 'client authentication failed');
      } else if (!(await bearer(req, res))) return;
      const token = String(req.body?.token ?? '');
      if (!token) return jsonError(res, 400, 'invalid_request', 'token is required');
      if (token.split('.').length === 3) {
        try {
          const c = await verifier.verify(token);
          if (c.tenant !== (req.params as any).tenant) return res.json({ active: false });
          return res.json({ active: true, token_type: 'Bearer', ...c });
        } catch {
          return res.json({ active: false });
        }
      }
      const rt = await a.provider.RefreshToken.find(token).catch(() => undefined);
      if (!rt || rt.isExpired || rt.consumed) return res.json({ active: false });
      const ctx = rt.grantId ? await a.store.get(SMART_CONTEXT, rt.grantId) : undefined;
      res.json({
        active: true,
        token_type: 'refresh_token',
        scope: rt.scope,
        client_id: rt.clientId,
        sub: rt.accountId,
        exp: rt.exp,
        iat: rt.iat,
        iss: a.issuer,
        ...(ctx?.patient ? { patient: ctx.patient } : {}),
        ...(ctx?.encounter ? { encounter: ctx.encounter } : {}),
      });
    } catch (e) {
      next(e);
    }
  });

  router.get('/smart-style.json', (_req, res) => {
    res.json({ color_background: '#f7f7f7', color_highlight: '#2a6f97', color_modal_backdrop: '', color_success: '#2e7d32', color_error: '#b00020', dim_border_radius: '6px', dim_font_size_regular: '14px', dim_spacing_size: '16px', font_family_body: 'system-ui, sans-serif', font_family_heading: 'system-ui, sans-serif' });
  });

  // The demo outbox moved to /outbox/{tenant} (server/mail/outbox-page.ts), which shows every message.
  router.get('/outbox', (req: Request<any>, res: Response) => res.redirect(302, `/outbox/${req.params.tenant}`));

  // oidc-provider: SMART's `aud` is the resource indicator; offline_access needs prompt=consent there.
  const form = express.urlencoded({ extended: false, limit: '64kb' });
  router.use(ROUTE_AUTHORIZE, (req, _res, next) => {
    if (req.method === 'POST') return form(req, _res, next);
    next();
  });
  router.use((req: Request<any>, res: Response) => {
    if (req.path === ROUTE_AUTHORIZE) smartAuthorizeParams(req);
    auth(req).provider.callback()(req, res);
  });
  return router;
}

const ROUTE_AUTHORIZE = '/authorize';

function smartAuthorizeParams(req: Request): void {
  const fix = (p: Record<string, unknown>) => {
    if (typeof p.aud === 'string' && p.resource === undefined) p.resource = p.aud;
    if (typeof p.scope === 'string' && p.scope.split(/\s+/).includes('offline_access') && p.prompt === undefined) p.prompt = 'consent';
  };
  if (req.method === 'POST' && req.body && typeof req.body === 'object') {
    fix(req.body);
    return;
  }
  const q = req.url.indexOf('?');
  if (q < 0) return;
  const params = new URLSearchParams(req.url.slice(q + 1));
  const obj: Record<string, unknown> = Object.fromEntries(params);
  fix(obj);
  if (obj.resource !== undefined && !params.has('resource')) params.set('resource', String(obj.resource));
  if (obj.prompt !== undefined && !params.has('prompt')) params.set('prompt', String(obj.prompt));
  req.url = req.url.slice(0, q + 1) + params.toString();
}

/** POST /admin/tenants (operator, ADMIN_API_KEY): a new practice with its first administrator. */
export function operatorRouter(config: Config, db: Knex, tenants: TenantDirectory): express.Router {
  const router = express.Router();
  router.post('/tenants', express.json({ limit: '16kb' }), async (req, res, next) => {
    try {
      res.locals.route = '/admin/tenants';
      const key = config.adminApiKey;
      const given = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? '';
      if (!key) return jsonError(res, 404, 'not_found', 'the operator API is off (set ADMIN_API_KEY)');
      if (given.length !== key.length || !timingSafeEqual(Buffer.from(given), Buffer.from(key))) return jsonError(res, 401, 'invalid_token', 'operator key required');
      const b = req.body ?? {};
      if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(String(b.slug ?? ''))) return jsonError(res, 400, 'invalid_request', 'slug: lowercase letters, digits and dashes');
      if (!b.adminEmail) return jsonError(res, 400, 'invalid_request', 'adminEmail is required');
      const out = await createTenantWithAdmin(db, { slug: b.slug, name: String(b.name ?? b.slug), adminEmail: String(b.adminEmail), adminPassword: b.adminPassword });
      tenants.invalidate(b.slug);
      emitAuthEvent({ type: 'admin-action', tenant: b.slug, outcome: 'success', userId: 'operator', ip: req.ip, reason: `POST /admin/tenants (operator API): ${out.created ? 'tenant created' : 'tenant exists'}, admin user ${out.admin.id}` });
      res.status(out.created ? 201 : 200).json(out);
    } catch (e) {
      if (e instanceof Error && /password|email/.test(e.message)) return jsonError(res, 400, 'invalid_request', e.message);
      next(e);
    }
  });
  return router;
}
