/** Known tenants and their settings, cached briefly (tenant rows are RLS-guarded like all data). */
import type { Knex } from 'knex';
import { ensureTenantKeys } from '../crypto/keyring';
import { inTenant } from '../db/tenant-tx';
import type { TenantSettings } from '../fhir/types';

export interface Tenant {
  id: string;
  name: string;
  settings: TenantSettings;
}

const SLUG = /^[a-z0-9][a-z0-9-]{0,62}$/;

export class TenantDirectory {
  private cache = new Map<string, { t: Tenant | undefined; at: number }>();
  constructor(private db: Knex, private ttlMs = 30_000) {}

  async get(id: string): Promise<Tenant | undefined> {
    if (!SLUG.test(id)) return undefined;
    const hit = this.cache.get(id);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.t;
    const t = await inTenant(this.db, id, async (tx) => {
      const r = await tx.raw(`SELECT tenant_id, name, settings FROM tenants WHERE tenant_id = ?`, [id]);
      const row = r.rows[0];
      if (!row) return undefined;
      const settings = typeof row.settings === 'string' ? JSON.parse(row.settings) : row.settings;
      return { id: row.tenant_id, name: row.name, settings } as Tenant;
    });
    this.cache.set(id, { t, at: Date.now() });
    return t;
  }

  invalidate(id?: string): void {
    if (id) this.cache.delete(id);
    else this.cache.clear();
  }
}

export async function ensureTenant(db: Knex, id: string, name: string, settings: TenantSettings = {}): Promise<void> {
  if (!SLUG.test(id)) throw new Error(`Tenant id "${id}" must be lowercase letters, digits and dashes`);
  await inTenant(db, id, (tx) =>
    tx.raw(`INSERT INTO tenants (tenant_id, name, settings) VALUES (?, ?, ?::jsonb) ON CONFLICT (tenant_id) DO NOTHING`, [
      id,
      name,
      JSON.stringify(settings),
    ]),
  );
  await ensureTenantKeys(db, id);
}

export async function setTenantSettings(db: Knex, id: string, settings: TenantSettings): Promise<void> {
  await inTenant(db, id, (tx) => tx.raw(`UPDATE tenants SET settings = ?::jsonb WHERE tenant_id = ?`, [JSON.stringify(settings), id]));
}
