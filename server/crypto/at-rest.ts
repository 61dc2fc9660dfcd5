/**
 * Encryption at rest as the store sees it: seal a resource's JSON before it is written, open a
 * stored JSON text after it is read. Resources with nothing to protect (the vast majority) pass
 * through with one substring test and no key lookup.
 */
import type { FhirResource as Resource } from 'fhir/r4';
import type { Knex } from 'knex';
import type { Tx } from '../db/tenant-tx';
import { unprocessable } from '../fhir/errors';
import { open, seal } from './aead';
import type { BlindIndex } from './blind-index';
import { openFields, sealFields } from './fields';
import { keysOf, keysOfTenant, type TenantKeys } from './keyring';
import { ENCRYPTED_EXTENSION, mayHoldSecrets } from './policy';

const CIPHER = /^e1\.(\d+)\.([A-Za-z0-9_-]+)$/;
const VERSIONS = /"e1\.(\d+)\./g;

/** How the marker extension appears in JSON.stringify output (no spaces): a text that merely
 * mentions the URL (an OperationOutcome message in an AuditEvent, say) is not a marker. */
const MARK = `"url":${JSON.stringify(ENCRYPTED_EXTENSION)}`;

const aadOf = (tenant: string, type: string, id: string) => `${tenant}/${type}/${id}`;

/** A client may not send the extension that marks ciphertexts (it would be "decrypted" on read). */
export function rejectReserved(json: string): void {
  if (json.includes(MARK)) {
    throw unprocessable(`The extension ${ENCRYPTED_EXTENSION} is reserved for this server's encryption at rest`);
  }
}

export interface Sealed {
  /** The JSON to store (the input when there was nothing to encrypt). */
  json: string;
  /** The tenant's blind index, when its keys were needed (pass it to the indexer). */
  blind?: BlindIndex;
}

/** `json` is JSON.stringify(resource); resource.id must be set. */
export async function sealForStorage(tx: Tx, resource: Resource, json: string): Promise<Sealed> {
  rejectReserved(json);
  if (!mayHoldSecrets(resource.resourceType, json)) return { json };
  const keys = await keysOf(tx);
  return { json: sealWith(keys, tx.tenant, resource, json), blind: keys.blind };
}

/** sealForStorage outside a transaction (the one-statement create). */
export async function sealForStorageIn(db: Knex, tenant: string, resource: Resource, json: string): Promise<Sealed> {
  rejectReserved(json);
  if (!mayHoldSecrets(resource.resourceType, json)) return { json };
  const keys = await keysOfTenant(db, tenant);
  return { json: sealWith(keys, tenant, resource, json), blind: keys.blind };
}

export function sealWith(keys: TenantKeys, tenant: string, resource: Resource, json: string): string {
  const copy = JSON.parse(json) as Record<string, unknown>;
  const key = keys.data.get(keys.activeVersion)!;
  const aad = aadOf(tenant, resource.resourceType, resource.id!);
  const n = sealFields(copy, (plain) => `e1.${keys.activeVersion}.${seal(key, plain, aad)}`);
  return n ? JSON.stringify(copy) : json;
}

/** The tenant's blind index (for search conditions on identifiers). */
export async function blindIndexOf(tx: Tx): Promise<BlindIndex> {
  return (await keysOf(tx)).blind;
}

function needsVersions(keys: TenantKeys, json: string): boolean {
  for (const m of json.matchAll(VERSIONS)) if (!keys.data.has(Number(m[1]))) return true;
  return false;
}

/** An encrypted primitive whose `_value` holds nothing but the ciphertext (the usual case). */
const LONE_VALUE = new RegExp(`"_value":\\{"extension":\\[\\{${MARK.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')},"valueString":"(e1\\.\\d+\\.[A-Za-z0-9_-]+)"\\}\\]\\}`, 'g');

export function openWith(keys: TenantKeys, tenant: string, type: string, id: string, json: string): string {
  const aad = aadOf(tenant, type, id);
  const openOne = (ciphertext: string): string => {
    const m = CIPHER.exec(ciphertext);
    const key = m && keys.data.get(Number(m[1]));
    if (!m || !key) throw new Error(`${type}/${id}: a stored ciphertext has an unknown form or key version`);
    return open(key, m[2], aad).toString('utf8');
  };
  // Fast path on the text (no parse of the whole resource): a lone encrypted value becomes
  // "value":"<plaintext>". Whatever is left (narratives, values with other extensions) is
  // opened on the parsed document.
  const text = json.replace(LONE_VALUE, (_all, c: string) => `"value":${JSON.stringify(openOne(c))}`);
  if (!text.includes(MARK)) return text;
  const doc = JSON.parse(text) as unknown;
  openFields(doc, openOne);
  return JSON.stringify(doc);
}

/** The stored JSON of `type/id` with its protected fields decrypted. */
export async function openStored(tx: Tx, type: string, id: string, json: string): Promise<string>;
export async function openStored(tx: Tx, type: string, id: string, json: string | null): Promise<string | null>;
export async function openStored(tx: Tx, type: string, id: string, json: string | null): Promise<string | null> {
  if (json === null || !json.includes(MARK)) return json;
  let keys = await keysOf(tx);
  if (needsVersions(keys, json)) keys = await keysOf(tx, { fresh: true });
  return openWith(keys, tx.tenant, type, id, json);
}

/** openStored outside a transaction. */
export async function openStoredIn(db: Knex, tenant: string, type: string, id: string, json: string | null): Promise<string | null> {
  if (json === null || !json.includes(MARK)) return json;
  let keys = await keysOfTenant(db, tenant);
  if (needsVersions(keys, json)) keys = await keysOfTenant(db, tenant, { fresh: true });
  return openWith(keys, tenant, type, id, json);
}

/** Opens many rows in place (search pages, includes, history). */
export async function openRows<R extends { json: string | null }>(tx: Tx, rows: R[], typeOf: (r: R) => string, idOf: (r: R) => string): Promise<R[]> {
  for (const r of rows) {
    if (r.json !== null && r.json.includes(MARK)) r.json = await openStored(tx, typeOf(r), idOf(r), r.json);
  }
  return rows;
}

/**
 * A secret of the tenant's configuration (e.g. its IdP client secret) sealed with the tenant's
 * active data key; `purpose` is part of the associated data, so a sealed value only opens where it
 * was meant to be used.
 */
export async function sealSecret(tx: Tx, purpose: string, plain: string): Promise<string> {
  const keys = await keysOf(tx);
  return `e1.${keys.activeVersion}.${seal(keys.data.get(keys.activeVersion)!, plain, `${tx.tenant}/secret/${purpose}`)}`;
}

export async function openSecretIn(db: Knex, tenant: string, purpose: string, sealed: string): Promise<string> {
  const m = CIPHER.exec(sealed);
  if (!m) throw new Error(`a sealed ${purpose} has an unknown form`);
  let keys = await keysOfTenant(db, tenant);
  if (!keys.data.has(Number(m[1]))) keys = await keysOfTenant(db, tenant, { fresh: true });
  const key = keys.data.get(Number(m[1]));
  if (!key) throw new Error(`a sealed ${purpose} names an unknown data key version`);
  return open(key, m[2], `${tenant}/secret/${purpose}`).toString('utf8');
}
