/**
 * The server's token signing key (ES256, P-256). Access tokens issued by this server (the
 * authorization server, `npm run token`) are signed with it and every FHIR request's token is
 * verified against it. Source, in order: SIGNING_KEY (a private JWK as JSON), SIGNING_KEY_FILE
 * (default DATA_DIR/secrets/signing-key.json), created on first start when the file is missing.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, JsonWebKey, KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config';
import { ensureSecretFile } from '../secret-file';

export interface SigningKey {
  kid: string;
  alg: 'ES256';
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** The private key as JWK (for oidc-provider's `jwks`), with kid/alg/use. */
  privateJwk: JsonWebKey & { kid: string; alg: string; use: string };
  /** The public JWK published at the tenant's jwks endpoint. */
  publicJwk: JsonWebKey & { kid: string; alg: string; use: string };
}

/** RFC 7638 thumbprint of an EC public key: the stable key id. */
function thumbprint(jwk: JsonWebKey): string {
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  return createHash('sha256').update(canonical).digest('base64url');
}

function fromJwk(raw: JsonWebKey): SigningKey {
  if (raw.kty !== 'EC' || raw.crv !== 'P-256' || !raw.d) throw new Error('The signing key must be a private EC P-256 JWK (kty EC, crv P-256, with d)');
  const privateKey = createPrivateKey({ key: raw, format: 'jwk' });
  const publicKey = createPublicKey(privateKey);
  const pub = publicKey.export({ format: 'jwk' });
  const kid = thumbprint(pub);
  return {
    kid,
    alg: 'ES256',
    privateKey,
    publicKey,
    privateJwk: { ...(privateKey.export({ format: 'jwk' }) as JsonWebKey), kid, alg: 'ES256', use: 'sig' },
    publicJwk: { ...pub, kid, alg: 'ES256', use: 'sig' },
  };
}

export function signingKeyFile(config: Config): string {
  return config.signingKeyFile ?? path.join(config.dataDir, 'secrets', 'signing-key.json');
}

/** A new private JWK as JSON text (for SIGNING_KEY or the key file). */
export function newSigningKeyJson(): string {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return JSON.stringify(privateKey.export({ format: 'jwk' }));
}

/** Creates the key file when neither SIGNING_KEY nor the file exists. Returns true if created. */
export function ensureSigningKey(config: Config): boolean {
  if (config.signingKey) return false;
  return ensureSecretFile(signingKeyFile(config), newSigningKeyJson);
}

const cache = new Map<string, SigningKey>();

export function loadSigningKey(config: Config): SigningKey {
  const source = config.signingKey ?? signingKeyFile(config);
  const hit = cache.get(source);
  if (hit) return hit;
  let text: string;
  if (config.signingKey) text = config.signingKey;
  else {
    ensureSigningKey(config);
    text = fs.readFileSync(source, 'utf8');
  }
  let jwk: JsonWebKey;
  try {
    jwk = JSON.parse(text);
  } catch {
    throw new Error(`The signing key (${config.signingKey ? 'SIGNING_KEY' : source}) is not valid JSON`);
  }
  const key = fromJwk(jwk);
  cache.set(source, key);
  return key;
}
