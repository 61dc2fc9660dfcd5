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
 * - res_id INCLUDEd in the (small) string, uri and date lookup indexes, and the date owner index
 *   with the parameter and the bounds, so those scans and probes are index-only. Not in the token
 *   and reference lookup indexes: as a key column a random res_id spread the inserts of one code
 *   over the whole index (idx_token_lookup read 4x more blocks than any other index while
 *   loading at 128 MB shared_buffers), and as an INCLUDE column it turns off btree deduplication.
 * - COLLATE "C" on the key columns (not tenant_id: the RLS policies use it) and lz4 for the JSON.
 * - Extended statistics on (res_type, param): the planner otherwise multiplies the selectivity
 *   of res_type and param as if independent and estimates 1 row for "the birthdates of all
 *   Patients", which picks per-row probes over set-at-a-time plans.
 */
const INDEX_TABLES = ['idx_string', 'idx_token', 'idx_date', 'idx_number', 'idx_quantity', 'idx_reference', 'idx_uri', 'idx_composite'];

/** PGlite runs one statement per query (extended protocol), so statements go one at a time. */
async function exec(knex: Knex, sql: string): Promise<void> {
  for (const stmt of sql.split(/;\s*\n/).map((s) => s.trim()).filter(Boolean)) await knex.raw(stmt);
}

/** Text columns (other than tenant_id, which the RLS policies use) compared byte-wise: COLLATE "C". */
const C_COLUMNS: Record<string, string[]> = {
  resources: ['res_type', 'id'],
  idx_string: ['value', 'exact'],
  idx_token: ['system', 'code', 'display', 'type_system', 'type_code'],
  idx_date: [],
  idx_number: [],
  idx_quantity: ['system', 'code', 'unit'],
  idx_reference: ['target_type', 'target_id', 'url'],
  idx_uri: ['value'],
  idx_composite: [1, 2, 3].flatMap((n) => [`c${n}_system`, `c${n}_code`, `c${n}_text`]),
};

export async function up(knex: Knex): Promise<void> {
  // The lookup indexes that change shape go first, so the collation change below does not
  // rebuild them only to drop them.
  await exec(knex, `
    DROP INDEX idx_date_lookup;
    DROP INDEX idx_date_owner;
    DROP INDEX idx_string_lookup;
    DROP INDEX idx_uri_lookup
  `);
  // Byte-wise comparison for every key column: the database collation (often C.UTF-8 or a
  // language locale) makes each index comparison a strcoll() call, which was the largest single
  // cost of loading (btree inserts). Equality is the same under any deterministic collation, and
  // the search code already sorts strings and ids with COLLATE "C", so results do not change.
  for (const [table, cols] of Object.entries(C_COLUMNS)) {
    const all = table === 'resources' ? cols : ['res_type', 'res_id', 'param', ...cols];
    await knex.raw(`ALTER TABLE ${table} ${all.map((c) => `ALTER COLUMN ${c} TYPE text COLLATE "C"`).join(', ')}`);
  }
  // lz4 compresses and decompresses the stored JSON several times faster than pglz (where the
  // server was built with it; PGlite or older builds keep the default).
  await knex.raw(`DO $$ BEGIN
      ALTER TABLE resources ALTER COLUMN content SET COMPRESSION lz4;
      ALTER TABLE resource_history ALTER COLUMN content SET COMPRESSION lz4;
    EXCEPTION WHEN others THEN NULL;
    END $$`);
  await exec(knex, `
    ALTER TABLE idx_date ADD COLUMN span smallint NOT NULL DEFAULT 2;
    UPDATE idx_date SET span = CASE WHEN extract(epoch FROM hi - lo) <= 86400 THEN 0 ELSE 1 END
     WHERE lo > '-infinity' AND hi < 'infinity' AND extract(epoch FROM hi - lo) <= 31622400;
    CREATE INDEX idx_date_lookup ON idx_date (tenant_id, res_type, param, span, lo, hi) INCLUDE (res_id);
    CREATE INDEX idx_date_owner ON idx_date (tenant_id, res_id, res_type, param) INCLUDE (lo, hi, span);
    CREATE INDEX idx_string_lookup ON idx_string (tenant_id, res_type, param, value text_pattern_ops) INCLUDE (res_id);
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
