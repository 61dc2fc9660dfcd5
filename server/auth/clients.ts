/**
 * Registered OAuth clients of a tenant, stored where oidc-provider looks them up (oidc_store,
 * model Client). Kinds: `public` (browser/native SMART app, PKCE, no secret), `confidential`
 * (client_secret_basic), `asymmetric` (private_key_jwt, user-facing), `backend` (SMART Backend
 * Services: client_credentials with private_key_jwt and a JWKS inline or by URL).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { TenantAuth } from './provider';
import { OIDC_SCOPES, resourceScopesOf } from './scope-policy';

export type ClientKind = 'public' | 'confidential' | 'asymmetric' | 'backend';

export interface ClientInput {
  kind: ClientKind;
  client_id?: string;
  client_name?: string;
  redirect_uris?: string[];
  /** The client's scope policy (what it may ever be granted). */
  scope?: string;
  jwks?: { keys: unknown[] };
  jwks_uri?: string;
}

export const DEFAULT_APP_SCOPE = 'openid fhirUser profile email launch launch/patient launch/encounter offline_access online_access patient/*.cruds user/*.cruds';
export const DEFAULT_BACKEND_SCOPE = 'system/*.rs';

export class ClientError extends Error {}

export async function registerClient(auth: TenantAuth, input: ClientInput): Promise<Record<string, unknown>> {
  const kind = input.kind;
  if (!['public', 'confidential', 'asymmetric', 'backend'].includes(kind)) throw new ClientError('kind must be public, confidential, asymmetric or backend');
  const id = input.client_id ?? randomUUID();
  if (!/^[A-Za-z0-9\-_.]{1,100}$/.test(id)) throw new ClientError('client_id may hold letters, digits, - _ . (at most 100)');
  const policy = (input.scope ?? (kind === 'backend' ? DEFAULT_BACKEND_SCOPE : DEFAULT_APP_SCOPE)).split(/\s+/).filter(Boolean);
  const unknown = policy.filter((p) => !OIDC_SCOPES.includes(p) && !resourceScopesOf(p).length);
  if (unknown.length) throw new ClientError(`unknown scopes in the policy: ${unknown.join(' ')}`);
  // oidc-provider's `scope` holds only the scopes it knows; the SMART resource scopes the client
  // may be granted are our own metadata field (scope-policy.ts mediates requests against it).
  const oidc = policy.filter((p) => OIDC_SCOPES.includes(p));
  const meta: Record<string, unknown> = {
    client_id: id,
    client_name: input.client_name ?? id,
    ...(oidc.length || kind !== 'backend' ? { scope: oidc.join(' ') || 'openid' } : {}),
    smart_scope_policy: policy.filter((p) => !OIDC_SCOPES.includes(p)).join(' '),
  };
  if (kind === 'backend') {
    Object.assign(meta, { grant_types: ['client_credentials'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'private_key_jwt' });
  } else {
    if (!input.redirect_uris?.length) throw new ClientError('redirect_uris is required for an app');
    Object.assign(meta, { grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], redirect_uris: input.redirect_uris });
    if (kind === 'public') meta.token_endpoint_auth_method = 'none';
    if (kind === 'confidential') Object.assign(meta, { token_endpoint_auth_method: 'client_secret_basic', client_secret: randomBytes(32).toString('base64url') });
    if (kind === 'asymmetric') meta.token_endpoint_auth_method = 'private_key_jwt';
  }
  if (kind === 'backend' || kind === 'asymmetric') {
    if (input.jwks && input.jwks_uri) throw new ClientError('give jwks or jwks_uri, not both');
    if (input.jwks) meta.jwks = input.jwks;
    else if (input.jwks_uri) meta.jwks_uri = input.jwks_uri;
    else throw new ClientError('private_key_jwt clients need jwks or jwks_uri');
  }
  try {
    await auth.provider.Client.validate(meta);
  } catch (e) {
    throw new ClientError(`invalid client metadata: ${(e as Error & { error_description?: string }).error_description ?? (e as Error).message}`);
  }
  if (await auth.store.get('Client', id)) throw new ClientError(`client ${id} already exists`);
  await auth.store.put('Client', id, meta);
  return { ...meta, kind };
}

export const withoutSecret = (m: Record<string, unknown>) => {
  const { client_secret: _s, ...rest } = m;
  return rest;
};
