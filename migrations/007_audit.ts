import type { Knex } from 'knex';
import { enableTenantRls } from '../server/db/tenant-rls';

/**
 * The audit trail (server/audit/). Events are queued (audit_queue) by the request that causes
 * them, then sealed in order by one sealer per tenant: each becomes an AuditEvent resource and a
 * link of the tenant's hash chain (audit_chain). Append-only for the application role: it can
 * never change or delete an AuditEvent row or a chain link (privileges and a trigger), so only
 * someone with the database owner's rights can tamper, and `npm run audit:verify` shows where.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE audit_queue (
      tenant_id text NOT NULL,
      seq bigserial NOT NULL,
      event json NOT NULL,
      queued_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (tenant_id, seq)
    )`);
  await knex.raw(`
    CREATE TABLE audit_chain (
      tenant_id text NOT NULL,
      seq bigint NOT NULL,
      res_id text COLLATE "C" NOT NULL, -- as resources.id (migration 006), so joins use both indexes
      prev_hash text NOT NULL,
      hash text NOT NULL,
      sealed_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (tenant_id, seq)
    )`);
  await knex.raw(`CREATE UNIQUE INDEX audit_chain_res ON audit_chain (tenant_id, res_id)`);
  for (const t of ['audit_queue', 'audit_chain']) await enableTenantRls(knex, t);
  await knex.raw(`GRANT SELECT, INSERT, DELETE ON audit_queue TO fhir_app`);
  await knex.raw(`GRANT SELECT, INSERT ON audit_chain TO fhir_app`);
  await knex.raw(`GRANT USAGE, SELECT ON SEQUENCE audit_queue_seq_seq TO fhir_app`);

  // AuditEvent rows (current and history) cannot be changed or removed by the application role.
  await knex.raw(`
    CREATE OR REPLACE FUNCTION audit_event_immutable() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
      IF OLD.res_type = 'AuditEvent' AND current_user = 'fhir_app' THEN
        RAISE EXCEPTION 'AuditEvent % is append-only', OLD.id USING ERRCODE = '42501';
      END IF;
      IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
      RETURN NEW;
    END $fn$`);
  for (const t of ['resources', 'resource_history']) {
    await knex.raw(`CREATE TRIGGER ${t}_audit_immutable BEFORE UPDATE OR DELETE ON ${t} FOR EACH ROW EXECUTE FUNCTION audit_event_immutable()`);
  }

  // Which tenants have events waiting to be sealed (slugs only; for the sealer's sweep after a restart).
  await knex.raw(`
    CREATE OR REPLACE FUNCTION audit_pending_tenants() RETURNS SETOF text
    LANGUAGE sql SECURITY DEFINER SET search_path = public AS $fn$
      SELECT DISTINCT tenant_id FROM audit_queue
    $fn$`);
  await knex.raw(`REVOKE ALL ON FUNCTION audit_pending_tenants() FROM PUBLIC`);
  await knex.raw(`GRANT EXECUTE ON FUNCTION audit_pending_tenants() TO fhir_app`);
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
