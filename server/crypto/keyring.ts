/**
 * Tenant keys (table tenant_keys, migrations/009): per tenant, versioned AES-256 data keys (one
 * active, used for new writes; older ones kept for what they encrypted) and one blind-index key.
 * Each is stored wrapped by the master key (master-key.ts) with the id of the wrapping key.
 * Unwrapped keys are cached in memory for a minute, so a rotation by another process (the
 * keys:rotate CLI, another worker) is picked up without a restart; a ciphertext of a version this
 * process has not seen yet makes it reload at once.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { loadConfig, type Config } from '../config';
import { inTenant, type Tx } from '../db/tenant-tx';
import { blindIndexWith, type BlindIndex } from './blind-index';
import { loadMasterKeys, type MasterKeys } from './master-key';

export interface TenantKeys {
  tenant: string;
  activeVersion: number;
  data: Map<number, Buffer>;
  blind: BlindIndex;
}

interface KeyRow {
  kind: 'data' | 'blind';
  version: number;
  wrapped: string;
  wrapped_by: string;
  active: boolean;
}

const CACHE_MS = 60_000;
let master: MasterKeys | undefined;
const cache = new Map<string, { keys: TenantKeys; at: number }>();

/** The master key(s) this process uses (from its configuration); clears the key cache. */
export function configureEncryption(config: Config): void {
  master = loadMasterKeys(config);
  cache.clear();
}

function masterKeys(): MasterKeys {
  return (master ??= loadMasterKeys(loadConfig()));
}

const context = (tenant: string, kind: string, version: number) => `${tenant}|${kind}|${version}`;

async function selectKeys(tx: Tx, lock = false): Promise<KeyRow[]> {
  const r = await tx.raw(
    `SELECT kind, version, wrapped, wrapped_by, active FROM tenant_keys WHERE tenant_id = ? ORDER BY kind, version${lock ? ' FOR UPDATE' : ''}`,
    [tx.tenant],
  );
  return r.rows as KeyRow[];
}

async function unwrap(tenant: string, row: KeyRow): Promise<Buffer> {
  const w = masterKeys().byId.get(row.wrapped_by);
  if (!w) {
    throw new Error(
      `The ${row.kind} key v${row.version} of tenant ${tenant} is wrapped by master key ${row.wrapped_by}, which is not configured (MASTER_KEY, MASTER_KEY_FILE, MASTER_KEY_PREVIOUS)`,
    );
  }
  return w.unwrap(row.wrapped, context(tenant, row.kind, row.version));
}

async function insertKey(tx: Tx, kind: KeyRow['kind'], version: number, active: boolean): Promise<void> {
  const m = masterKeys().current;
  const wrapped = await m.wrap(randomBytes(32), context(tx.tenant, kind, version));
  await tx.raw(
    `INSERT INTO tenant_keys (tenant_id, kind, version, wrapped, wrapped_by, active) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (tenant_id, kind, version) DO NOTHING`,
    [tx.tenant, kind, version, wrapped, m.id, active],
  );
}

async function build(tenant: string, rows: KeyRow[]): Promise<TenantKeys> {
  const data = new Map<number, Buffer>();
  let activeVersion = 0;
  let blind: BlindIndex | undefined;
  for (const row of rows) {
    const key = await unwrap(tenant, row);
    if (row.kind === 'data') {
      data.set(row.version, key);
      if (row.active) activeVersion = row.version;
    } else if (row.active) blind = blindIndexWith(key);
  }
  if (!activeVersion || !blind) throw new Error(`tenant ${tenant} has no active data key or blind-index key`);
  return { tenant, activeVersion, data, blind };
}

/**
 * The tenant's keys, read in the caller's transaction (row-level security applies). A tenant
 * without keys gets them here; they are cached only once they were seen committed, so a rolled
 * back transaction cannot leave this process with a key that is not in the database.
 */
export async function keysOf(tx: Tx, opts: { fresh?: boolean } = {}): Promise<TenantKeys> {
  const hit = cache.get(tx.tenant);
  if (hit && !opts.fresh && Date.now() - hit.at < CACHE_MS) return hit.keys;
  let rows = await selectKeys(tx);
  const committed = rows.some((r) => r.kind === 'data' && r.active) && rows.some((r) => r.kind === 'blind' && r.active);
  if (!committed) {
    if (!rows.some((r) => r.kind === 'data')) await insertKey(tx, 'data', 1, true);
    if (!rows.some((r) => r.kind === 'blind')) await insertKey(tx, 'blind', 1, true);
    rows = await selectKeys(tx);
  }
  const keys = await build(tx.tenant, rows);
  if (committed) cache.set(tx.tenant, { keys, at: Date.now() });
  return keys;
}

/** keysOf outside a transaction (for the one-statement read paths). */
export async function keysOfTenant(db: Knex, tenant: string, opts: { fresh?: boolean } = {}): Promise<TenantKeys> {
  const hit = cache.get(tenant);
  if (hit && !opts.fresh && Date.now() - hit.at < CACHE_MS) return hit.keys;
  return inTenant(db, tenant, (tx) => keysOf(tx, opts));
}

/** Creates the tenant's keys if it has none (tenant creation calls it). */
export async function ensureTenantKeys(db: Knex, tenant: string): Promise<void> {
  await inTenant(db, tenant, (tx) => keysOf(tx));
}

export interface RotationResult {
  tenant: string;
  /** The new active data key version (new writes use it). */
  activeVersion: number;
  /** Keys re-wrapped under the current master key. */
  rewrapped: number;
  masterKeyId: string;
}

/**
 * Rotation, in one short transaction (rows locked; readers keep working with their cached keys):
 * every key of the tenant is re-wrapped under the current master key, and a new data key version
 * becomes the active one. Old data key versions stay (what they encrypted still opens); the
 * blind-index key is re-wrapped but not replaced, since the index is built from it.
 */
export async function rotateTenantKeys(db: Knex, tenant: string): Promise<RotationResult> {
  const result = await inTenant(db, tenant, async (tx) => {
    await keysOf(tx, { fresh: true }); // creates them for a tenant that has none
    const rows = await selectKeys(tx, true);
    const m = masterKeys().current;
    for (const row of rows) {
      const key = await unwrap(tenant, row);
      const wrapped = await m.wrap(key, context(tenant, row.kind, row.version));
      await tx.raw(
        `UPDATE tenant_keys SET wrapped = ?, wrapped_by = ?, rewrapped_at = now() WHERE tenant_id = ? AND kind = ? AND version = ?`,
        [wrapped, m.id, tenant, row.kind, row.version],
      );
    }
    const next = Math.max(...rows.filter((r) => r.kind === 'data').map((r) => r.version)) + 1;
    await tx.raw(`UPDATE tenant_keys SET active = false WHERE tenant_id = ? AND kind = 'data' AND active`, [tenant]);
    await insertKey(tx, 'data', next, true);
    return { tenant, activeVersion: next, rewrapped: rows.length, masterKeyId: m.id };
  });
  cache.delete(tenant);
  return result;
}
