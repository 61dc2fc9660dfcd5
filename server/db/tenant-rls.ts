import type { Knex } from 'knex';

/**
 * For migrations: puts a tenant table under row-level security, FORCE included (the owner is
 * bound too), with the one policy every tenant table has: rows of the tenant set by
 * set_config('app.tenant', ..., true) only, for reading and writing.
 */
export async function enableTenantRls(knex: Knex, table: string): Promise<void> {
  await knex.raw(`ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY`);
  await knex.raw(`ALTER TABLE ${table} FORCE ROW LEVEL SECURITY`);
  await knex.raw(`
    CREATE POLICY tenant_isolation ON ${table}
      USING (tenant_id = current_setting('app.tenant', true))
      WITH CHECK (tenant_id = current_setting('app.tenant', true))`);
}
