/**
 * AES-256-GCM with a random 96-bit nonce and associated data. Output layout (base64url):
 * nonce (12 bytes) | ciphertext | tag (16 bytes). Used for both the data keys' wrapping and the
 * encrypted fields of resources.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const NONCE = 12;
const TAG = 16;

export function seal(key: Buffer, plaintext: Buffer | string, aad: string): string {
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([c.update(typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext), c.final()]);
  return Buffer.concat([nonce, body, c.getAuthTag()]).toString('base64url');
}

/** Throws when the key, the associated data or the ciphertext is not the one sealed. */
export function open(key: Buffer, sealed: string, aad: string): Buffer {
  const raw = Buffer.from(sealed, 'base64url');
  if (raw.length < NONCE + TAG) throw new Error('ciphertext too short');
  const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, NONCE));
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(raw.subarray(raw.length - TAG));
  return Buffer.concat([d.update(raw.subarray(NONCE, raw.length - TAG)), d.final()]);
}
