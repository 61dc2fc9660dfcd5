/**
 * fhir_create(): a create in one statement (one round trip). It sets the tenant for its own
 * transaction, then inserts the current row, the history row and the index rows, under RLS as
 * the calling role. Its body is generated from the indexer's table and column list, and
 * re-created after every migration run, so it can never fall behind the index schema.
 */
import type { Knex } from 'knex';
import { COLUMN_TYPES, INDEX_TABLES } from '../search/indexer';

export function createFunctionSql(): string {
  const inserts = INDEX_TABLES.map((t) => {
    const cols = Object.entries(COLUMN_TYPES[t]);
    return `  INSERT INTO ${t} (tenant_id, res_type, res_id, param, ${cols.map(([c]) => c).join(', ')})
    SELECT p_tenant, p_type, p_id, x.param, ${cols.map(([c]) => `x.${c}`).join(', ')}
      FROM jsonb_to_recordset(p_index -> '${t}') AS x(param text, ${cols.map(([c, ty]) => `${c} ${ty}`).join(', ')});`;
  }).join('\n');
  return `CREATE OR REPLACE FUNCTION fhir_create(p_tenant text, p_type text, p_id text, p_at timestamptz, p_json text, p_index jsonb)
RETURNS void LANGUAGE plpgsql SECURITY INVOKER AS $fn$
BEGIN
  PERFORM set_config('app.tenant', p_tenant, true);
  INSERT INTO resources (tenant_id, res_type, id, version, last_updated, deleted, content)
    VALUES (p_tenant, p_type, p_id, 1, p_at, false, p_json::json);
  INSERT INTO resource_history (tenant_id, res_type, id, version, last_updated, deleted, method, content)
    VALUES (p_tenant, p_type, p_id, 1, p_at, false, 'POST', p_json::json);
${inserts}
END $fn$`;
}

export async function installWriteFunctions(knex: Knex): Promise<void> {
  await knex.raw(createFunctionSql());
  await knex.raw(`GRANT EXECUTE ON FUNCTION fhir_create(text, text, text, timestamptz, text, jsonb) TO fhir_app`);
}
