import type { Knex } from 'knex';

/**
 * `identifier:of-type=typeSystem|typeCode|value`: token rows of an Identifier also carry one
 * coding of Identifier.type (one row per type coding; NULL when the identifier has no type).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`ALTER TABLE idx_token ADD COLUMN type_system text, ADD COLUMN type_code text`);
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
