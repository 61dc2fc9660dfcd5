import type { Knex } from 'knex';

/**
 * Composite search parameters (e.g. Observation `code-value-quantity`): one row per combination
 * of component values taken from the SAME item of the composite's expression (an Observation, one
 * Observation.component, one Group.characteristic...), so a search matches a code and a value of
 * one item together. Slots c1..c3 hold the components in definition order (R4 composites have
 * two or three). Which columns a slot uses depends on the component's parameter type:
 *   token      c_system, c_code
 *   quantity   c_system, c_code, c_text (unit), c_num (value) or c_nlo/c_nhi (a Range)
 *   number     c_num
 *   date       c_dlo, c_dhi (the value's range)
 *   string     c_text (normalized)
 *   reference  c_system (target type), c_code (target id), c_text (the reference as written)
 *   uri        c_code
 */
const SLOT = (n: number) =>
  `c${n}_system text, c${n}_code text, c${n}_text text, c${n}_num numeric, c${n}_nlo numeric, c${n}_nhi numeric, ` +
  `c${n}_dlo timestamptz, c${n}_dhi timestamptz`;

/** PGlite runs one statement per query (extended protocol), so statements go one at a time. */
async function exec(knex: Knex, sql: string): Promise<void> {
  for (const stmt of sql.split(/;\s*\n/).map((s) => s.trim()).filter(Boolean)) await knex.raw(stmt);
}

export async function up(knex: Knex): Promise<void> {
  await exec(knex, `
    CREATE TABLE idx_composite (
      tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
      ${SLOT(1)},
      ${SLOT(2)},
      ${SLOT(3)}
    );
    CREATE INDEX idx_composite_lookup ON idx_composite (tenant_id, res_type, param, c1_code, c1_system);
    CREATE INDEX idx_composite_owner ON idx_composite (tenant_id, res_id, res_type);
    ALTER TABLE idx_composite ENABLE ROW LEVEL SECURITY;
    ALTER TABLE idx_composite FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON idx_composite
      USING (tenant_id = current_setting('app.tenant', true))
      WITH CHECK (tenant_id = current_setting('app.tenant', true));
    GRANT SELECT, INSERT, UPDATE, DELETE ON idx_composite TO fhir_app
  `);
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
