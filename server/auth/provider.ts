/**
 * One oidc-provider instance per tenant, issuer `${PUBLIC_URL}/auth/${tenant}`, created on the
 * tenant's first auth request and cached. Access tokens are JWTs (RFC 9068) signed with the
 * server's ES256 key for the single resource server, the tenant's FHIR base, and carry the claims
 * contract of server/auth/tokens.ts (tenant, role, fhirUser, patient, encounter through
 * extraTokenClaims), so the FHIR router's TokenVerifier accepts them as they are.
 */
import { createHmac } from 'node:crypto';
import type { Knex } from 'knex';
import { decodeJwt } from 'jose';
import type { Config } from '../config';
import { logger } from '../log';
import { AuthStore, adapterFor } from './adapter';
import { emitAuthEvent } from './events';
import type { SigningKey } from './keys';
import { ROUTES } from './routes';
import { mediate, OIDC_SCOPES as OIDC_SCOPES_LIST } from './scope-policy';
import { audienceOf, issuerOf } from './tokens';
import { findUserById } from './users';

export interface SmartContext {
  patient?: string;
  encounter?: string;
  needBanner?: boolean;
}

export const SMART_CONTEXT = 'SmartContext';
export const LAUNCH = 'SmartLaunch';

/** Lifetimes (seconds). */
export const TTL = {
  code: 60,
  backendToken: 300,
  refresh: 14 * 24 * 3600,
  grant: 14 * 24 * 3600,
  interaction: 3600,
  sessionIdle: 15 * 60,
  sessionAbsolute: 8 * 3600,
};

/** oidc-provider, loaded on the first tenant's first auth request (ESM; require(esm) on Node >= 20.19). */
let oidcLib: any;
function oidc(): { Provider: any; errors: any } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  oidcLib ??= require('oidc-provider');
  return { Provider: oidcLib.default ?? oidcLib.Provider ?? oidcLib, errors: oidcLib.errors };
}

/** Seconds a session lives from now: 15 minutes idle, never past 8 hours after sign-in. */
export function sessionTtl(loginTs: number | undefined, now = Math.floor(Date.now() / 1000)): number {
  const absolute = (loginTs ?? now) + TTL.sessionAbsolute - now;
  return Math.max(1, Math.min(TTL.sessionIdle, absolute));
}

export interface TenantAuth {
  provider: any;
  store: AuthStore;
  issuer: string;
  audience: string;
}

/** The client's SMART resource-scope policy (registered metadata). */
export const policyOf = (client: any): string => client?.metadata?.().smart_scope_policy ?? '';

function candidateScopes(ctx: any): string {
  const parts: string[] = [];
  if (ctx.oidc?.params?.scope) parts.push(ctx.oidc.params.scope);
  const e = ctx.oidc?.entities ?? {};
  for (const k of ['AuthorizationCode', 'RefreshToken']) if (e[k]?.scope) parts.push(e[k].scope);
  return parts.join(' ');
}

export function createTenantAuth(config: Config, db: Knex, key: SigningKey, tenant: string): TenantAuth {
  const issuer = issuerOf(config, tenant);
  const audience = audienceOf(config, tenant);
  const store = new AuthStore(db, tenant);
  const cookieKey = createHmac('sha256', String(key.privateJwk.d)).update(`cookies:${tenant}`).digest('base64url');

  const { Provider, errors } = oidc();
  const provider = new Provider(issuer, {
    adapter: adapterFor(store),
    jwks: { keys: [key.privateJwk] },
    cookies: {
      keys: [cookieKey],
      names: { session: `_session_${tenant}`, interaction: `_interaction_${tenant}`, resume: `_resume_${tenant}` },
      long: { httpOnly: true, sameSite: 'lax', signed: true },
      short: { httpOnly: true, sameSite: 'lax', signed: true },
    },
    routes: ROUTES,
    scopes: OIDC_SCOPES_LIST,
    // amr in the id_token: how the user signed in (pwd or fed, then otp or mfa; email for patients)
    claims: { openid: ['sub', 'amr'], fhirUser: ['fhirUser'], email: ['email'] },
    conformIdTokenClaims: false,
    extraParams: ['launch', 'aud'],
    extraClientMetadata: { properties: ['smart_scope_policy'] },
    pkce: { required: () => true },
    // SMART backend services: the client assertion lives at most 5 minutes and sub == iss.
    async assertJwtClientAuthClaimsAndHeader(_ctx: any, claims: any) {
      const now = Math.floor(Date.now() / 1000);
      if (typeof claims.exp !== 'number' || claims.exp > now + 300 + 5) throw new errors.InvalidClientAuth('the assertion must expire within 5 minutes');
      if (claims.sub !== claims.iss) throw new errors.InvalidClientAuth('the assertion sub must equal iss (the client_id)');
    },
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    },
    enabledJWA: {
      clientAuthSigningAlgValues: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'ES256', 'ES384', 'ES512', 'EdDSA', 'HS256'],
      idTokenSigningAlgValues: ['ES256'],
    },
    interactions: { url: (_ctx: any, interaction: any) => `/auth/${tenant}/interaction/${interaction.uid}` },
    // Every authorization request runs our consent step, which resolves the launch context anew.
    loadExistingGrant: async (ctx: any) => {
      const id = ctx.oidc.result?.consent?.grantId;
      return id ? ctx.oidc.provider.Grant.find(id) : undefined;
    },
    async findAccount(_ctx: any, sub: string) {
      const user = await findUserById(db, tenant, sub);
      if (!user || user.disabled) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, ...(user.fhirUser ? { fhirUser: `${audience}/${user.fhirUser}` } : {}), email: user.email };
        },
      };
    },
    async extraTokenClaims(_ctx: any, token: any) {
      const out: Record<string, unknown> = { tenant };
      if (token.accountId) {
        const user = await findUserById(db, tenant, token.accountId);
        if (!user) return out;
        out.role = user.role;
        if (user.fhirUser) out.fhirUser = user.fhirUser;
        const c = (token.grantId ? await store.get(SMART_CONTEXT, token.grantId) : undefined) as SmartContext | undefined;
        if (user.role === 'patient' && user.fhirUser?.startsWith('Patient/')) out.patient = user.fhirUser.slice('Patient/'.length);
        else if (c?.patient) out.patient = c.patient;
        if (c?.encounter) out.encounter = c.encounter;
      }
      return out;
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false }, // JWT access tokens are introspected by our own endpoint
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => audience,
        useGrantedResource: async () => true,
        async getResourceServerInfo(ctx: any, indicator: string, client: any) {
          if (indicator !== audience) throw new errors.InvalidTarget(`the only resource (aud) of this server is ${audience}`);
          const backend = ctx.oidc?.params?.grant_type === 'client_credentials';
          const { allowed, denied } = mediate(candidateScopes(ctx), policyOf(client));
          if (backend) {
            const nonSystem = allowed.filter((s) => !s.startsWith('system/'));
            if (denied.length || nonSystem.length) {
              throw new errors.InvalidScope('scope outside what this client may request', [...denied, ...nonSystem].join(' '));
            }
          }
          const scope = backend ? allowed : allowed.filter((s) => !s.startsWith('system/'));
          return {
            scope: scope.join(' '),
            audience,
            accessTokenTTL: backend ? TTL.backendToken : config.accessTokenTtlSeconds,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
    },
    clientBasedCORS(_ctx: any, origin: string, client: any) {
      if (config.corsOrigins.includes(origin)) return true;
      return (client.redirectUris ?? []).some((u: string) => URL.parse(u)?.origin === origin);
    },
    ttl: {
      AccessToken: config.accessTokenTtlSeconds,
      AuthorizationCode: TTL.code,
      ClientCredentials: TTL.backendToken,
      IdToken: 3600,
      RefreshToken: TTL.refresh,
      Grant: TTL.grant,
      Interaction: TTL.interaction,
      // Idle timeout: every request that touches the session pushes its expiry 15 minutes out,
      // never beyond 8 hours after sign-in.
      Session: (_ctx: any, session: any) => sessionTtl(session?.loginTs),
    },
    issueRefreshToken: async (_ctx: any, client: any, code: any) =>
      client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    async renderError(ctx: any, out: Record<string, string>) {
      ctx.type = 'html';
      ctx.body = page('Sign-in error', `<p>${esc(out.error)}: ${esc(out.error_description ?? '')}</p>`);
    },
  });
  provider.proxy = true;

  // SMART token response fields (patient, encounter, need_patient_banner, smart_style_url).
  provider.use(async (ctx: any, next: () => Promise<void>) => {
    await next();
    if (ctx.oidc?.route !== 'token' || ctx.status !== 200 || !ctx.body?.access_token) return;
    let claims: Record<string, unknown> = {};
    try {
      claims = decodeJwt(ctx.body.access_token);
    } catch {
      /* opaque */
    }
    const grantId = ctx.oidc.entities?.Grant?.jti;
    const c = (grantId ? await store.get(SMART_CONTEXT, grantId) : undefined) as SmartContext | undefined;
    // The granted scopes as SMART apps expect them: the OpenID/launch scopes along with the
    // resource scopes (oidc-provider reports only the access token's resource scopes).
    const oidcScope: string | undefined = ctx.oidc.entities?.Grant?.getOIDCScope?.();
    if (oidcScope) ctx.body.scope = [...new Set([...oidcScope.split(' '), ...String(ctx.body.scope ?? '').split(' ')])].filter(Boolean).join(' ');
    if (claims.patient) ctx.body.patient = claims.patient;
    if (claims.encounter) ctx.body.encounter = claims.encounter;
    if (claims.role) {
      ctx.body.need_patient_banner = c?.needBanner ?? Boolean(claims.patient);
      ctx.body.smart_style_url = `${issuer}/smart-style.json`;
    }
    ctx.body.tenant = tenant;
    emitAuthEvent({
      type: 'token-issued',
      tenant,
      outcome: 'success',
      userId: typeof claims.role === 'string' ? String(claims.sub) : undefined,
      role: claims.role as string | undefined,
      clientId: String(claims.client_id ?? ''),
      ip: ctx.ip,
    });
  });
  provider.on('end_session.success', (ctx: any) => {
    emitAuthEvent({ type: 'logout', tenant, outcome: 'success', userId: ctx.oidc?.session?.accountId, ip: ctx.ip });
  });
  provider.on('server_error', (_ctx: any, err: Error) => logger.error({ tenant, err: { message: err.message, stack: err.stack } }, 'authorization server error'));
  return { provider, store, issuer, audience };
}

export function esc(s: unknown): string {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title><style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#222}
input,button{font:inherit;padding:.5rem;margin:.25rem 0;width:100%;box-sizing:border-box}button{cursor:pointer}
.err{color:#a00}.hint{color:#555;font-size:.9em}fieldset{border:1px solid #ccc;margin:1rem 0;padding:1rem}code{word-break:break-all}</style></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;
}
