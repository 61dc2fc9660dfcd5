import type { Knex } from 'knex';

/**
 * Search indexes shaped for the queries server/search builds (see docs/decisions.md, "Search
 * indexes"):
 *
 * - idx_date.span: the length class of the stored range [lo, hi): 0 = at most a day, 1 = at
 *   most 366 days, 2 = longer or open-ended. `hi > X` then becomes, per class, a range on lo
 *   (lo > X - longest span of the class), so `ge`/`gt`/`ap` and `ge..&lt..` pairs read only the
 *   index entries near the searched dates instead of everything before (or after) them.
 *   The lookup index leads with (param, span, lo). New rows get the class from the indexer; the
 *   default 2 is always correct (it only costs speed).
 * - res_id as the last key column of the token/reference lookup indexes, INCLUDEd in the string
 *   and uri ones, and owner indexes with the parameter: a multi-parameter search probes
 *   "does this resource have code = C" as one index lookup, and the driving scan is index-only.
 * - Extended statistics on (res_type, param): the planner otherwise multiplies the selectivity
 *   of res_type and param as if independent and estimates 1 row for "the birthdates of all
 *   Patients", which picks per-row probes over set-at-a-time plans.
 */
const INDEX_TABLES = ['idx_string', 'idx_token', 'idx_date', 'idx_number', 'idx_quantity', 'idx_reference', 'idx_uri', 'idx_composite'];

/** PGlite runs one statement per query (extended protocol), so statements go one at a time. */
async function exec(knex: Knex, sql: string): Promise<void> {
  for (const stmt of sql.split(/;\s*\n/).map((s) => s.trim()).filter(Boolean)) await knex.raw(stmt);
}

export async function up(knex: Knex): Promise<void> {
  await exec(knex, `
    ALTER TABLE idx_date ADD COLUMN span smallint NOT NULL DEFAULT 2;
    UPDATE idx_date SET span = CASE WHEN extract(epoch FROM hi - lo) <= 86400 THEN 0 ELSE 1 END
     WHERE lo > '-infinity' AND hi < 'infinity' AND extract(epoch FROM hi - lo) <= 31622400;
    DROP INDEX idx_date_lookup;
    CREATE INDEX idx_date_lookup ON idx_date (tenant_id, res_type, param, span, lo, hi) INCLUDE (res_id);
    DROP INDEX idx_date_owner;
    CREATE INDEX idx_date_owner ON idx_date (tenant_id, res_id, res_type, param) INCLUDE (lo, hi, span);

    DROP INDEX idx_token_lookup;
    CREATE INDEX idx_token_lookup ON idx_token (tenant_id, res_type, param, code, system, res_id);
    DROP INDEX idx_reference_lookup;
    CREATE INDEX idx_reference_lookup ON idx_reference (tenant_id, res_type, param, target_id, target_type, res_id);
    DROP INDEX idx_string_lookup;
    CREATE INDEX idx_string_lookup ON idx_string (tenant_id, res_type, param, value text_pattern_ops) INCLUDE (res_id);
    DROP INDEX idx_uri_lookup;
    CREATE INDEX idx_uri_lookup ON idx_uri (tenant_id, res_type, param, value text_pattern_ops) INCLUDE (res_id)
  `);
  for (const t of INDEX_TABLES) {
    await knex.raw(`CREATE STATISTICS ${t}_type_param (dependencies, mcv) ON tenant_id, res_type, param FROM ${t}`);
  }
  // Codes: how many Observations have code C is what decides between probing and hashing.
  await knex.raw(`CREATE STATISTICS idx_token_type_param_code (mcv) ON tenant_id, res_type, param, code FROM idx_token`);
  await knex.raw(`ALTER STATISTICS idx_token_type_param_code SET STATISTICS 1000`);
  await knex.raw(`CREATE STATISTICS resources_tenant_type (dependencies, mcv) ON tenant_id, res_type FROM resources`);
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
