/**
 * Access tokens: JWTs (ES256, the server's signing key) whose claims carry everything an
 * authorization decision needs, so a FHIR request costs one signature check (cached) and no
 * database lookup. The authorization server and `npm run token` issue them; the FHIR router
 * verifies them. Claims (the contract with every issuer):
 *   iss  `${PUBLIC_URL}/auth/${tenant}`     aud  `${PUBLIC_URL}/fhir/${tenant}` (the FHIR base)
 *   sub  user or client id                  client_id  the OAuth client
 *   scope  space-separated SMART scopes     tenant  the practice slug
 *   patient / encounter  launch context     fhirUser  e.g. Practitioner/123 or Patient/456
 *   role  admin | practitioner | physician | nurse | patient (users only; absent for system clients)
 *   exp / iat / jti
 */
import { randomUUID } from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import type { Config } from '../config';
import type { SigningKey } from './keys';
import { isRole, Role } from './roles';

export interface AccessClaims {
  iss: string;
  aud: string;
  sub: string;
  client_id: string;
  scope: string;
  tenant: string;
  patient?: string;
  encounter?: string;
  fhirUser?: string;
  role?: Role;
  exp: number;
  iat: number;
  jti: string;
}

export const issuerOf = (config: Config, tenant: string) => `${config.publicUrl}/auth/${tenant}`;
export const audienceOf = (config: Config, tenant: string) => `${config.publicUrl}/fhir/${tenant}`;

export interface IssueInput {
  tenant: string;
  scope: string;
  clientId: string;
  sub?: string;
  patient?: string;
  encounter?: string;
  fhirUser?: string;
  role?: Role;
  ttlSeconds?: number;
}

export async function issueAccessToken(config: Config, key: SigningKey, input: IssueInput): Promise<{ token: string; claims: AccessClaims }> {
  const now = Math.floor(Date.now() / 1000);
  const ttl = input.ttlSeconds ?? config.accessTokenTtlSeconds;
  const claims: AccessClaims = {
    iss: issuerOf(config, input.tenant),
    aud: audienceOf(config, input.tenant),
    sub: input.sub ?? input.clientId,
    client_id: input.clientId,
    scope: input.scope,
    tenant: input.tenant,
    ...(input.patient ? { patient: input.patient } : {}),
    ...(input.encounter ? { encounter: input.encounter } : {}),
    ...(input.fhirUser ? { fhirUser: input.fhirUser } : {}),
    ...(input.role ? { role: input.role } : {}),
    iat: now,
    exp: now + ttl,
    jti: randomUUID(),
  };
  const token = await new SignJWT({ ...claims }).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' }).sign(key.privateKey);
  return { token, claims };
}

/** Why a bearer token was refused (-> 401 with WWW-Authenticate error="invalid_token"). */
export class InvalidToken extends Error {}

/**
 * Verifies tokens and remembers good ones until they expire (a verified token's claims cannot
 * change), so the signature check is paid once per token, not per request.
 */
export class TokenVerifier {
  private cache = new Map<string, AccessClaims>();
  constructor(private config: Config, private key: SigningKey, private maxEntries = 10_000) {}

  async verify(token: string): Promise<AccessClaims> {
    const now = Math.floor(Date.now() / 1000);
    const hit = this.cache.get(token);
    if (hit) {
      if (hit.exp > now) return hit;
      this.cache.delete(token);
      throw new InvalidToken('The access token has expired');
    }
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, this.key.publicKey, { algorithms: [this.key.alg], clockTolerance: 5 }));
    } catch (e) {
      if (e instanceof joseErrors.JWTExpired) throw new InvalidToken('The access token has expired');
      throw new InvalidToken('The access token is not valid (signature, format or claims)');
    }
    const claims = payload as unknown as AccessClaims;
    const prefix = `${this.config.publicUrl}/auth/`;
    if (typeof claims.iss !== 'string' || !claims.iss.startsWith(prefix)) throw new InvalidToken('The access token was not issued by this server');
    if (typeof claims.tenant !== 'string' || claims.iss !== prefix + claims.tenant) throw new InvalidToken('The access token names no tenant');
    if (typeof claims.scope !== 'string' || typeof claims.exp !== 'number') throw new InvalidToken('The access token carries no scope or expiry');
    if (claims.role !== undefined && !isRole(claims.role)) throw new InvalidToken(`The access token carries an unknown role`);
    if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(token, claims);
    return claims;
  }
}
