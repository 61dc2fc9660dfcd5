/**
 * Scope mediation at the authorization server: a client is registered with a scope policy (its
 * `scope` metadata, e.g. `openid fhirUser launch/patient offline_access patient/*.rs user/*.cruds`);
 * a requested SMART resource scope is granted only if one policy scope covers it (same context,
 * type or `*`, every letter, and the same granular query if the policy has one).
 */
import { parseScopes, ResourceScope } from './scopes';

/** Non-resource scopes the server knows (oidc-provider's `scopes`). */
export const OIDC_SCOPES = ['openid', 'fhirUser', 'profile', 'email', 'offline_access', 'online_access', 'launch', 'launch/patient', 'launch/encounter'];

function covers(p: ResourceScope, r: ResourceScope): boolean {
  if (p.context !== r.context) return false;
  if (p.type !== '*' && p.type !== r.type) return false;
  for (const op of r.ops) if (!p.ops.has(op)) return false;
  if (p.query) {
    if (!r.query) return false;
    const key = (q: Array<[string, string]>) => JSON.stringify([...q].sort());
    if (key(p.query) !== key(r.query)) return false;
  }
  return true;
}

/** The requested resource scopes (raw strings) that the policy allows, and those it does not. */
export function mediate(requested: string | undefined, policy: string | undefined): { allowed: string[]; denied: string[] } {
  const req = parseScopes(requested ?? '').resource;
  const pol = parseScopes(policy ?? '').resource;
  const allowed: string[] = [];
  const denied: string[] = [];
  for (const r of req) (pol.some((p) => covers(p, r)) ? allowed : denied).push(r.raw);
  return { allowed, denied };
}

export const resourceScopesOf = (scope: string | undefined) => parseScopes(scope ?? '').resource;
