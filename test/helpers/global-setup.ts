/** Creates the test database if needed and applies the migrations once per test run. */
import knexFactory from 'knex';
import { TEST_DATABASE_URL } from './db-url';
import { migrateLatest } from '../../server/db/migrate';

export default async function globalSetup(): Promise<void> {
  const url = new URL(TEST_DATABASE_URL);
  const dbName = url.pathname.replace(/^\//, '');
  const adminUrl = new URL(TEST_DATABASE_URL);
  adminUrl.pathname = '/postgres';
  const admin = knexFactory({ client: 'pg', connection: adminUrl.toString(), pool: { min: 0, max: 1 } });
  try {
    const r = await admin.raw('SELECT 1 FROM pg_database WHERE datname = ?', [dbName]);
    if (!r.rows.length) await admin.raw(`CREATE DATABASE "${dbName.replace(/"/g, '')}"`);
  } finally {
    await admin.destroy();
  }
  const db = knexFactory({ client: 'pg', connection: TEST_DATABASE_URL, pool: { min: 0, max: 1 } });
  try {
    await migrateLatest(db);
  } finally {
    await db.destroy();
  }
}
