/** Applies the numbered, forward-only migrations in migrations/ (knex migration API, custom source). */
import fs from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import { installWriteFunctions } from './write-functions';

const MIGRATIONS_DIR = path.resolve(__dirname, '../../migrations');

class FolderSource implements Knex.MigrationSource<string> {
  async getMigrations(): Promise<string[]> {
    return fs
      .readdirSync(MIGRATIONS_DIR)
      .filter((f) => /^\d+_.*\.(ts|js)$/.test(f) && !f.endsWith('.d.ts'))
      .sort();
  }
  getMigrationName(name: string): string {
    return name.replace(/\.(ts|js)$/, '');
  }
  async getMigration(name: string): Promise<Knex.Migration> {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(path.join(MIGRATIONS_DIR, name));
  }
}

export async function migrateLatest(knex: Knex): Promise<string[]> {
  const [, applied] = await knex.migrate.latest({ migrationSource: new FolderSource() });
  // Functions derived from the code (not frozen in a migration): always brought up to date.
  await installWriteFunctions(knex);
  return applied as string[];
}
