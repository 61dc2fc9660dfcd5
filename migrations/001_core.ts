import type { Knex } from 'knex';
import { enableTenantRls } from '../server/db/tenant-rls';

/** Tables that hold tenant data. Every one of them carries tenant_id and is guarded by RLS. */
export const TENANT_TABLES = [
  'tenants',
  'resources',
  'resource_history',
  'idx_string',
  'idx_token',
  'idx_date',
  'idx_number',
  'idx_quantity',
  'idx_reference',
  'idx_uri',
  'idempotency_keys',
];

/** PGlite runs one statement per query (extended protocol), so statements go one at a time. */
async function exec(knex: Knex, sql: string): Promise<void> {
  for (const stmt of sql.split(/;\s*\n/).map((s) => s.trim()).filter(Boolean)) await knex.raw(stmt);
}

export async function up(knex: Knex): Promise<void> {
  await exec(knex, `
    CREATE TABLE tenants (
      tenant_id text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
      name text NOT NULL,
      settings jsonb NOT NULL DEFAULT '{}'::jsonb,
      created_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE resources (
      tenant_id text NOT NULL,
      res_type text NOT NULL,
      id text NOT NULL,
      version integer NOT NULL,
      last_updated timestamptz NOT NULL,
      deleted boolean NOT NULL DEFAULT false,
      content json,
      PRIMARY KEY (tenant_id, res_type, id)
    );
    CREATE INDEX resources_type_updated ON resources (tenant_id, res_type, last_updated, id);

    CREATE TABLE resource_history (
      seq bigserial,
      tenant_id text NOT NULL,
      res_type text NOT NULL,
      id text NOT NULL,
      version integer NOT NULL,
      last_updated timestamptz NOT NULL,
      deleted boolean NOT NULL DEFAULT false,
      method text NOT NULL,
      content json,
      PRIMARY KEY (tenant_id, res_type, id, version)
    );
    CREATE INDEX history_tenant_seq ON resource_history (tenant_id, seq);
    CREATE INDEX history_type_seq ON resource_history (tenant_id, res_type, seq);

    -- Index rows: a lookup index led by (tenant, type, param, value) for searches, and an owner
    -- index led by the resource id for rewriting one resource's rows. The owner index starts with
    -- res_id (not res_type) so that, even before ANALYZE has run on a freshly loaded database, the
    -- planner never mistakes it for a way to answer a parameter lookup.
    CREATE TABLE idx_string (
      tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
      value text NOT NULL, exact text NOT NULL
    );
    CREATE INDEX idx_string_lookup ON idx_string (tenant_id, res_type, param, value text_pattern_ops);
    CREATE INDEX idx_string_owner ON idx_string (tenant_id, res_id, res_type);

    CREATE TABLE idx_token (
      tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
      system text, code text, display text
    );
    CREATE INDEX idx_token_lookup ON idx_token (tenant_id, res_type, param, code, system);
    CREATE INDEX idx_token_owner ON idx_token (tenant_id, res_id, res_type);

    CREATE TABLE idx_date (
      tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
      lo timestamptz, hi timestamptz
    );
    CREATE INDEX idx_date_lookup ON idx_date (tenant_id, res_type, param, lo, hi);
    CREATE INDEX idx_date_owner ON idx_date (tenant_id, res_id, res_type);

    CREATE TABLE idx_number (
      tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
      value numeric, lo numeric, hi numeric
    );
    CREATE INDEX idx_number_lookup ON idx_number (tenant_id, res_type, param, value);
    CREATE INDEX idx_number_owner ON idx_number (tenant_id, res_id, res_type);

    CREATE TABLE idx_quantity (
      tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
      system text, code text, unit text, value numeric, lo numeric, hi numeric
    );
    CREATE INDEX idx_quantity_lookup ON idx_quantity (tenant_id, res_type, param, code, value);
    CREATE INDEX idx_quantity_owner ON idx_quantity (tenant_id, res_id, res_type);

    CREATE TABLE idx_reference (
      tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
      target_type text, target_id text, url text
    );
    CREATE INDEX idx_reference_lookup ON idx_reference (tenant_id, res_type, param, target_id, target_type);
    CREATE INDEX idx_reference_target ON idx_reference (tenant_id, target_type, target_id);
    CREATE INDEX idx_reference_owner ON idx_reference (tenant_id, res_id, res_type);

    CREATE TABLE idx_uri (
      tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
      value text NOT NULL
    );
    CREATE INDEX idx_uri_lookup ON idx_uri (tenant_id, res_type, param, value text_pattern_ops);
    CREATE INDEX idx_uri_owner ON idx_uri (tenant_id, res_id, res_type);

    CREATE TABLE idempotency_keys (
      tenant_id text NOT NULL,
      key text NOT NULL,
      request_hash text NOT NULL,
      status integer NOT NULL,
      headers jsonb NOT NULL,
      body text,
      expires_at timestamptz NOT NULL,
      PRIMARY KEY (tenant_id, key)
    );
  `);

  // The application role: no superuser, no BYPASSRLS. Roles are cluster-wide, so create it once.
  await knex.raw(`
    DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fhir_app') THEN
        CREATE ROLE fhir_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
      END IF;
    END $$;
  `);
  await knex.raw(`GRANT USAGE ON SCHEMA public TO fhir_app`);
  for (const t of TENANT_TABLES) {
    await enableTenantRls(knex, t);
    await knex.raw(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${t} TO fhir_app`);
  }
  await knex.raw(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO fhir_app`);
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
