import type { Knex } from 'knex';
import { enableTenantRls } from '../server/db/tenant-rls';

/**
 * Encryption at rest (server/crypto/): each tenant's data keys and blind-index key, wrapped by
 * the master key. Rows are never deleted (a lost data key is lost data), so the application role
 * may read, add and re-wrap, not delete.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE tenant_keys (
      tenant_id text NOT NULL,
      kind text NOT NULL CHECK (kind IN ('data', 'blind')),
      version integer NOT NULL CHECK (version > 0),
      wrapped text NOT NULL,
      wrapped_by text NOT NULL,
      active boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL DEFAULT now(),
      rewrapped_at timestamptz,
      PRIMARY KEY (tenant_id, kind, version)
    )`);
  await knex.raw(`CREATE UNIQUE INDEX tenant_keys_active ON tenant_keys (tenant_id, kind) WHERE active`);
  await enableTenantRls(knex, 'tenant_keys');
  await knex.raw(`GRANT SELECT, INSERT, UPDATE ON tenant_keys TO fhir_app`);
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
