import type { Knex } from 'knex';

/**
 * Single-statement read and create. Each function sets app.tenant for its own (implicit)
 * transaction with set_config(..., true) and then runs as the calling role (SECURITY INVOKER),
 * so row-level security applies exactly as in a BEGIN / set_config / ... / COMMIT transaction,
 * at a third of the round trips. The generic paths (server/store) stay for everything else.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE OR REPLACE FUNCTION fhir_read(p_tenant text, p_type text, p_id text)
    RETURNS TABLE (version integer, last_updated timestamptz, deleted boolean, content_json text)
    LANGUAGE plpgsql SECURITY INVOKER AS $fn$
    BEGIN
      PERFORM set_config('app.tenant', p_tenant, true);
      RETURN QUERY SELECT r.version, r.last_updated, r.deleted, r.content::text
        FROM resources r WHERE r.tenant_id = p_tenant AND r.res_type = p_type AND r.id = p_id;
    END $fn$`);
  await knex.raw(`GRANT EXECUTE ON FUNCTION fhir_read(text, text, text) TO fhir_app`);
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
