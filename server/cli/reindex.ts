/** npm run reindex: rebuilds the search index rows of stored resources. See HELP. */
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../config';
import { openDatabase } from '../db/connection';
import { reindex } from '../search/reindex';

const HELP = `Usage: npm run reindex -- [options]

Rebuilds the search index rows of every stored resource from its current content, tenant by
tenant, in batches (one transaction per batch, keyset-paged by type and id). Use it after an
upgrade that changes what is indexed, or to repair index rows. Pending migrations are applied
first. Searches keep working meanwhile; a resource's rows are replaced within its batch's
transaction, and a write to a resource of the batch waits until the batch commits.

Options:
  --tenant <slug>      only this tenant (default: all tenants)
  --type <Type>        only this resource type, e.g. Observation
  --batch-size <n>     resources per transaction (default 500)
  --force              embedded database only: open DATA_DIR even though it looks in use
  --quiet              no progress lines, only the summary
  -h, --help           this text

Database: DATABASE_URL (PostgreSQL; safe while the server runs), or else the embedded PGlite
database in DATA_DIR. PGlite allows one process at a time: stop the server (npm start) before
reindexing an embedded database. The command refuses to start while DATA_DIR looks in use; after
a crash that left it looking in use, --force opens it anyway.

PUBLIC_URL must be the server's public URL (as for npm start), so that absolute references to
this server are indexed like relative ones, exactly as on write.

Examples:
  DATABASE_URL=postgres://postgres@localhost/fhir npm run reindex
  npm run reindex -- --tenant demo --type Observation
`;

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  if (v === undefined || v.startsWith('--')) throw new Error(`${name} needs a value (see --help)`);
  return v;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(HELP);
    return;
  }
  const known = new Set(['--tenant', '--type', '--batch-size', '--force', '--quiet']);
  for (let i = 0; i < args.length; i++) {
    if (!known.has(args[i])) throw new Error(`Unknown argument "${args[i]}" (see --help)`);
    if (['--tenant', '--type', '--batch-size'].includes(args[i])) i++;
  }
  const tenant = argValue(args, '--tenant');
  const type = argValue(args, '--type');
  const batchRaw = argValue(args, '--batch-size');
  if (batchRaw !== undefined && !/^[1-9]\d*$/.test(batchRaw)) throw new Error(`--batch-size must be a positive integer, not "${batchRaw}"`);
  const quiet = args.includes('--quiet');

  const config = loadConfig();
  if (!config.databaseUrl) {
    const dir = path.join(config.dataDir, 'pglite');
    if (!fs.existsSync(path.join(dir, 'PG_VERSION'))) throw new Error(`No embedded database in ${config.dataDir} (set DATA_DIR, or DATABASE_URL for PostgreSQL)`);
    // PGlite keeps postmaster.pid in its folder while a process has it open (and removes it on close).
    if (fs.existsSync(path.join(dir, 'postmaster.pid')) && !args.includes('--force')) {
      throw new Error(
        `The embedded database in ${config.dataDir} is in use (is npm start running?). PGlite allows one process at a time: ` +
          `stop the server, then run the reindex again. If no server is running (it crashed), use --force.`,
      );
    }
  }

  const db = await openDatabase(config, { migrate: true });
  let lastLine = 0;
  try {
    const summary = await reindex(db, {
      tenant,
      type,
      batchSize: batchRaw ? Number(batchRaw) : undefined,
      publicUrl: config.publicUrl,
      onProgress: quiet
        ? undefined
        : (p) => {
            const now = Date.now();
            if (p.done !== p.total && p.done !== 0 && now - lastLine < 1000) return;
            lastLine = now;
            const pct = p.total ? Math.floor((100 * p.done) / p.total) : 100;
            process.stderr.write(`reindex ${p.tenant}: ${p.done}/${p.total} (${pct}%), ${Math.round(p.perSecond)} resources/s\n`);
          },
    });
    for (const t of summary.tenants) process.stdout.write(`  ${t.tenant}: ${t.resources} resources in ${t.seconds.toFixed(1)} s\n`);
    process.stdout.write(
      `Reindexed ${summary.resources} resources${type ? ` of type ${type}` : ''} in ${summary.tenants.length} tenant${summary.tenants.length === 1 ? '' : 's'} ` +
        `in ${summary.seconds.toFixed(1)} s (${Math.round(summary.perSecond)} resources/s)\n`,
    );
  } finally {
    await db.close();
  }
}

main().catch((e) => {
  process.stderr.write(`Reindex failed: ${e?.message ?? e}\n`);
  process.exit(1);
});
