/**
 * Sign-in through the practice's own OpenID Connect identity provider (Auth0, Entra ID, Keycloak,
 * Google Workspace, ...), optional and configured per tenant (`settings.federation`).
 *
 * openid-client (by the author of oidc-provider) does discovery, the authorization code flow with
 * PKCE S256, state and nonce, the token exchange and the id_token validation. The IdP only tells
 * us who the person is: its verified email must belong to an EXISTING user of the tenant (no
 * provisioning), and the sign-in then finishes as that local user, so roles, fhirUser, SMART
 * launch context and tokens are exactly those of a password sign-in. See docs/security.md,
 * "Federation".
 */
import * as oidc from 'openid-client';
import type { Knex } from 'knex';
import { inTenant } from '../db/tenant-tx';
import type { FederationSettings } from '../fhir/types';
import { isRole, ROLES } from './roles';
import { sealSecret } from '../crypto/at-rest';

export const STAFF_ROLES = ROLES.filter((r) => r !== 'patient');
export const DEFAULT_SCOPES = 'openid email';
export const DEFAULT_LABEL = 'your organisation account';
/** `amr` values (RFC 8176) that count as a second factor done at the IdP. */
export const MFA_AMR = ['mfa', 'otp'];

export class FederationConfigError extends Error {}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * A development setup (the server itself on http://localhost): only then may the IdP be an http
 * loopback URL, so a tenant admin of a production server cannot point discovery at local services.
 */
export const SECRET_PURPOSE = 'federation-client-secret';

export function isLocalDevelopment(publicUrl: string): boolean {
  const u = URL.parse(publicUrl);
  return Boolean(u && u.protocol === 'http:' && LOOPBACK.has(u.hostname));
}

/** Checks and normalises a federation setting (admin API, CLI); throws FederationConfigError. */
export function validateFederation(input: unknown, previous?: FederationSettings, opts: { allowHttpLoopback?: boolean } = {}): FederationSettings {
  if (!input || typeof input !== 'object' || Array.isArray(input)) throw new FederationConfigError('a JSON object is required');
  const b = input as Record<string, unknown>;
  const str = (k: string, max: number): string | undefined => {
    const v = b[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string' || !v.trim() || v.length > max) throw new FederationConfigError(`${k} must be a non-empty string of at most ${max} characters`);
    return v.trim();
  };
  const issuer = str('issuer', 512);
  if (!issuer) throw new FederationConfigError('issuer (the IdP issuer URL) is required');
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    throw new FederationConfigError('issuer must be an absolute URL');
  }
  if (url.protocol !== 'https:' && !(opts.allowHttpLoopback && url.protocol === 'http:' && LOOPBACK.has(url.hostname))) {
    throw new FederationConfigError('issuer must use https (http only for localhost on a development server)');
  }
  if (url.search || url.hash) throw new FederationConfigError('issuer must not have a query or fragment');
  const clientId = str('clientId', 256);
  if (!clientId) throw new FederationConfigError('clientId is required');
  // A new secret replaces the old one; without one, the stored secret stays as long as the IdP
  // and the client are the same (so the label can be changed without sending the secret again).
  const clientSecret = str('clientSecret', 1024);
  const keep = clientSecret === undefined && previous && previous.issuer === issuer && previous.clientId === clientId;
  const kept = keep ? { ...(previous.clientSecret ? { clientSecret: previous.clientSecret } : {}), ...(previous.clientSecretSealed ? { clientSecretSealed: previous.clientSecretSealed } : {}) } : {};
  const scopes = str('scopes', 512) ?? DEFAULT_SCOPES;
  const scopeList = scopes.split(/\s+/);
  if (!scopeList.includes('openid')) throw new FederationConfigError('scopes must contain openid');
  if (scopeList.some((s) => !/^[\x21\x23-\x5b\x5d-\x7e]+$/.test(s))) throw new FederationConfigError('scopes: space-separated scope names');
  const label = str('label', 60) ?? DEFAULT_LABEL;
  let roles: string[] = [...STAFF_ROLES];
  if (b.roles !== undefined) {
    if (!Array.isArray(b.roles) || !b.roles.length || !b.roles.every(isRole)) {
      throw new FederationConfigError(`roles must be a non-empty list of ${ROLES.join(', ')}`);
    }
    roles = [...new Set(b.roles as string[])];
  }
  const bool = (k: string, dflt: boolean): boolean => {
    const v = b[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') throw new FederationConfigError(`${k} must be true or false`);
    return v;
  };
  return {
    issuer,
    clientId,
    ...(clientSecret ? { clientSecret } : kept),
    scopes: scopeList.join(' '),
    label,
    roles,
    requireEmailVerified: bool('requireEmailVerified', true),
    acceptIdpMfa: bool('acceptIdpMfa', true),
  };
}

/** What the admin API shows: everything but the secret. */
export function publicFederation(f: FederationSettings) {
  const { clientSecret, clientSecretSealed, ...rest } = f;
  return { ...rest, clientSecretSet: Boolean(clientSecret || clientSecretSealed) };
}

/** Stores (or, with undefined, removes) the tenant's federation setting; other settings stay. */
export async function setFederation(db: Knex, tenant: string, f: FederationSettings | undefined): Promise<boolean> {
  return inTenant(db, tenant, async (tx) => {
    if (f?.clientSecret) {
      // stored encrypted with the tenant's data key, never in clear (docs/security.md)
      const { clientSecret, ...rest } = f;
      f = { ...rest, clientSecretSealed: await sealSecret(tx, SECRET_PURPOSE, clientSecret) };
    }
    const r = f
      ? await tx.raw(`UPDATE tenants SET settings = settings || jsonb_build_object('federation', ?::jsonb) WHERE tenant_id = ?`, [JSON.stringify(f), tenant])
      : await tx.raw(`UPDATE tenants SET settings = settings - 'federation' WHERE tenant_id = ?`, [tenant]);
    return (r.rowCount ?? 0) > 0;
  });
}

/** Why a federated sign-in did not work, with the sentence the sign-in page shows. */
export class FederationError extends Error {
  constructor(
    readonly kind: 'unreachable' | 'refused' | 'invalid',
    readonly userMessage: string,
    /** short reason for the audit trail (never an email) */
    readonly reason: string,
  ) {
    super(reason);
  }
}

const isNetworkError = (e: unknown): boolean => {
  const err = e as { name?: string; message?: string; code?: string; cause?: unknown };
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError') return true;
  if (e instanceof TypeError && /fetch failed/i.test(e.message)) return true;
  // 5xx or a non-JSON answer from the IdP (a proxy error page)
  return err?.code === 'OAUTH_RESPONSE_IS_NOT_CONFORM' || err?.code === 'OAUTH_RESPONSE_IS_NOT_JSON';
};

export interface FederationStart {
  url: string;
  state: string;
  nonce: string;
  verifier: string;
}

export interface FederatedIdentity {
  subject: string;
  email?: string;
  emailVerified: boolean;
  amr: string[];
}

/** Discovered IdP configurations, per tenant, until the setting changes or an hour passes. */
export class FederationClients {
  private cache = new Map<string, { key: string; at: number; config: oidc.Configuration }>();
  constructor(
    /** Opens a sealed client secret (crypto/at-rest.ts openSecretIn with the server's database). */
    private openSecret: (tenant: string, sealed: string) => Promise<string>,
    private ttlMs = 3600_000,
    private timeoutSeconds = 10,
  ) {}

  async configuration(tenant: string, stored: FederationSettings): Promise<oidc.Configuration> {
    const key = JSON.stringify([stored.issuer, stored.clientId, stored.clientSecretSealed ?? stored.clientSecret ?? '']);
    const hit = this.cache.get(tenant);
    if (hit && hit.key === key && Date.now() - hit.at < this.ttlMs) return hit.config;
    const secret = stored.clientSecretSealed ? await this.openSecret(tenant, stored.clientSecretSealed) : stored.clientSecret;
    const f = { ...stored, clientSecret: secret };
    const url = new URL(f.issuer);
    const insecure = url.protocol === 'http:' && LOOPBACK.has(url.hostname);
    let config: oidc.Configuration;
    try {
      config = await oidc.discovery(
        url,
        f.clientId,
        f.clientSecret ? { client_secret: f.clientSecret } : undefined,
        f.clientSecret ? oidc.ClientSecretBasic(f.clientSecret) : oidc.None(),
        { timeout: this.timeoutSeconds, ...(insecure ? { execute: [oidc.allowInsecureRequests] } : {}) },
      );
    } catch (e) {
      throw new FederationError(
        'unreachable',
        `${f.label ?? DEFAULT_LABEL} cannot be reached right now. Try again later, or sign in with your password.`,
        isNetworkError(e) ? 'federation: identity provider unreachable' : 'federation: identity provider discovery failed',
      );
    }
    this.cache.set(tenant, { key, at: Date.now(), config });
    return config;
  }

  forget(tenant: string): void {
    this.cache.delete(tenant);
  }

  /** The IdP's authorization URL for a new attempt (PKCE S256, state, nonce). */
  async start(tenant: string, f: FederationSettings, redirectUri: string): Promise<FederationStart> {
    const config = await this.configuration(tenant, f);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: f.scopes ?? DEFAULT_SCOPES,
      response_type: 'code',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    return { url: url.href, state, nonce, verifier };
  }

  /**
   * The callback: checks the response (state, iss), exchanges the code (PKCE), validates the
   * id_token (signature, iss, aud, exp, nonce) and reads the email, from the id_token or else
   * from userinfo.
   */
  async finish(tenant: string, f: FederationSettings, callbackUrl: URL, expected: { state: string; nonce: string; verifier: string }): Promise<FederatedIdentity> {
    const config = await this.configuration(tenant, f);
    const label = f.label ?? DEFAULT_LABEL;
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      tokens = await oidc.authorizationCodeGrant(config, callbackUrl, {
        pkceCodeVerifier: expected.verifier,
        expectedState: expected.state,
        expectedNonce: expected.nonce,
        idTokenExpected: true,
      });
    } catch (e) {
      if (e instanceof oidc.AuthorizationResponseError) {
        const cancelled = e.error === 'access_denied' || e.error === 'login_required' || e.error === 'interaction_required';
        throw new FederationError('refused', `Sign-in with ${label} was ${cancelled ? 'cancelled or refused' : 'refused'}.`, `federation: identity provider answered ${String(e.error).slice(0, 40)}`);
      }
      if (isNetworkError(e)) throw new FederationError('unreachable', `${label} cannot be reached right now. Try again later, or sign in with your password.`, 'federation: identity provider unreachable');
      throw new FederationError('invalid', `The answer from ${label} could not be verified. Start again from the app.`, `federation: invalid response (${String((e as { code?: string }).code ?? (e as Error).name ?? 'error').slice(0, 60)})`);
    }
    const claims = tokens.claims();
    if (!claims) throw new FederationError('invalid', `The answer from ${label} could not be verified. Start again from the app.`, 'federation: no id_token');
    let email = typeof claims.email === 'string' ? claims.email : undefined;
    let verified: unknown = claims.email_verified;
    if (!email && tokens.access_token) {
      try {
        const info = await oidc.fetchUserInfo(config, tokens.access_token, claims.sub);
        if (typeof info.email === 'string') {
          email = info.email;
          verified = info.email_verified;
        }
      } catch {
        /* no userinfo: no email */
      }
    }
    const amr = Array.isArray(claims.amr) ? claims.amr.filter((a): a is string => typeof a === 'string') : [];
    return { subject: claims.sub, email, emailVerified: verified === true || verified === 'true', amr };
  }
}

/** Whether the IdP's `amr` shows a second factor (RFC 8176 `mfa`, or `otp`). */
export const idpDidMfa = (amr: string[]) => amr.some((a) => MFA_AMR.includes(a));
