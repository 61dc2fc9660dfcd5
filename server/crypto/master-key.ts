/**
 * The master key wraps (encrypts) every tenant's data keys; it never touches resource data.
 * Source, in order: MASTER_KEY (32 bytes as base64 or hex), MASTER_KEY_FILE (default
 * DATA_DIR/secrets/master-key), created on first start when the file is missing.
 * MASTER_KEY_PREVIOUS lists earlier master keys: they still unwrap, so `npm run keys:rotate`
 * can re-wrap everything under the current key, after which the old one can be dropped.
 *
 * `KeyWrapper` is the seam for a cloud KMS: an implementation whose wrap/unwrap call the KMS
 * (e.g. AWS KMS Encrypt/Decrypt with the tenant as encryption context) replaces LocalWrapper.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config';
import { ensureSecretFile } from '../secret-file';
import { open, seal } from './aead';

export interface KeyWrapper {
  /** Stable id of the wrapping key, stored beside each wrapped key (which key can unwrap it). */
  readonly id: string;
  wrap(key: Buffer, context: string): Promise<string>;
  unwrap(wrapped: string, context: string): Promise<Buffer>;
}

export class LocalWrapper implements KeyWrapper {
  readonly id: string;
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error('A master key must be 32 bytes (base64 or hex)');
    this.id = 'local:' + createHash('sha256').update('fhir-master-key-id|').update(key).digest('hex').slice(0, 16);
  }
  async wrap(key: Buffer, context: string): Promise<string> {
    return seal(this.key, key, 'wrap|' + context);
  }
  async unwrap(wrapped: string, context: string): Promise<Buffer> {
    return open(this.key, wrapped, 'wrap|' + context);
  }
}

export interface MasterKeys {
  current: KeyWrapper;
  /** Every wrapper that may unwrap, by id (the current one included). */
  byId: Map<string, KeyWrapper>;
}

export function parseMasterKey(text: string): Buffer {
  const t = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64');
  if (key.length !== 32) throw new Error('A master key must be 32 bytes, given as base64 or as 64 hex digits');
  return key;
}

export function newMasterKey(): string {
  return randomBytes(32).toString('base64');
}

export function masterKeyFile(config: Config): string {
  return config.masterKeyFile ?? path.join(config.dataDir, 'secrets', 'master-key');
}

/** Creates the key file when neither MASTER_KEY nor the file exists. Returns true if created. */
export function ensureMasterKey(config: Config): boolean {
  if (config.masterKey) return false;
  return ensureSecretFile(masterKeyFile(config), newMasterKey);
}

export function loadMasterKeys(config: Config): MasterKeys {
  let text: string;
  if (config.masterKey) text = config.masterKey;
  else {
    ensureMasterKey(config);
    text = fs.readFileSync(masterKeyFile(config), 'utf8');
  }
  const current = new LocalWrapper(parseMasterKey(text));
  const byId = new Map<string, KeyWrapper>([[current.id, current]]);
  for (const p of config.masterKeyPrevious) {
    const w = new LocalWrapper(parseMasterKey(p));
    if (!byId.has(w.id)) byId.set(w.id, w);
  }
  return { current, byId };
}
