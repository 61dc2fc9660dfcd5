/** npm run migrate: applies pending migrations to DATABASE_URL (or the embedded database). */
import { loadConfig } from '../config';
import { openDatabase } from '../db/connection';
import { migrateLatest } from '../db/migrate';

async function main(): Promise<void> {
  if (process.argv.includes('--help')) {
    process.stdout.write('Usage: npm run migrate\n\nApplies pending migrations to DATABASE_URL, or to the embedded PGlite database in DATA_DIR.\n');
    return;
  }
  const config = loadConfig();
  const db = await openDatabase(config, { migrate: false });
  try {
    const applied = config.databaseUrl ? await migrateLatest(db.owner) : await migrateEmbedded(db);
    process.stdout.write(applied.length ? `Applied: ${applied.join(', ')}\n` : 'Already up to date\n');
  } finally {
    await db.close();
  }
}

async function migrateEmbedded(db: Awaited<ReturnType<typeof openDatabase>>): Promise<string[]> {
  await db.owner.raw('RESET ROLE');
  return migrateLatest(db.owner);
}

main().catch((e) => {
  process.stderr.write(`Migration failed: ${e?.message ?? e}\n`);
  process.exit(1);
});
