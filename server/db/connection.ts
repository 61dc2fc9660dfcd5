/**
 * Database connections. One code path for both engines:
 *  - DATABASE_URL set  -> PostgreSQL through `pg`;
 *  - otherwise         -> embedded PGlite (Postgres in WASM) in DATA_DIR, through knex-pglite.
 * The owner connection runs migrations; the app connection works as role `fhir_app`,
 * which has no BYPASSRLS, so row-level security always applies to it.
 */
import fs from 'node:fs';
import path from 'node:path';
import knexFactory, { Knex } from 'knex';
import pg from 'pg';
import type { Config } from '../config';
import { migrateLatest } from './migrate';
import { TenantPgClient } from './tenant-pg-client';
import { setReadPool } from './tenant-tx';

// Keep int8 (count(*), bigserial) as JS numbers, numeric as strings, timestamps as Date.
pg.types.setTypeParser(20, (v) => Number(v));

export interface Database {
  /** The connection every request uses (role fhir_app, RLS enforced). */
  app: Knex;
  /** Owner connection (migrations, admin tasks). Same object as app for PGlite. */
  owner: Knex;
  engine: 'postgres' | 'pglite';
  close(): Promise<void>;
}

/** A pool of role fhir_app connections (SET ROLE unless DATABASE_APP_URL logs in as it), each set up with `setup`. */
function appPool(config: Config, setup: string[]): Knex {
  const statements = [...(config.databaseAppUrl ? [] : ['SET ROLE fhir_app']), ...setup];
  return knexFactory({
    client: TenantPgClient as never,
    connection: config.databaseAppUrl ?? config.databaseUrl,
    pool: {
      min: 0,
      max: config.dbPoolMax,
      afterCreate: (conn: pg.Client, done: (err: Error | null, conn: pg.Client) => void) => {
        conn.query(statements.join('; '), (err: Error | null) => done(err, conn));
      },
    },
  });
}

export async function openDatabase(config: Config, opts: { migrate?: boolean } = {}): Promise<Database> {
  const migrate = opts.migrate ?? true;
  if (config.databaseUrl) {
    const owner = knexFactory({ client: 'pg', connection: config.databaseUrl, pool: { min: 0, max: 2 } });
    if (migrate) await migrateLatest(owner);
    // The application pool, and the read sessions' pool (searches, server/db/tenant-tx.ts
    // inTenantRead) with the search statement_timeout as its session default.
    // Statements are prepared (tenant-tx.ts); every execution is still planned for its values
    // (force_custom_plan), except where a read session asks for a generic plan: under `auto`,
    // Postgres switched a prepared birthdate search at 100,000 patients to a generic plan that
    // cost 0.7 s of CPU per request instead of ~2 ms.
    const custom = 'SET plan_cache_mode = force_custom_plan';
    const app = appPool(config, [custom]);
    const timeout = Math.floor(config.searchTimeoutMs);
    const reads = appPool(config, [custom, `SET statement_timeout = ${timeout > 0 ? timeout : 0}`]);
    setReadPool(app, reads);
    return {
      app,
      owner,
      engine: 'postgres',
      close: async () => {
        await reads.destroy();
        await app.destroy();
        await owner.destroy();
      },
    };
  }

  fs.mkdirSync(config.dataDir, { recursive: true });
  const { PGlite } = await import('@electric-sql/pglite');
  // btree_gist: the scheduling tables' exclusion constraint (migrations/011_scheduling.ts)
  // (a subpath export: typed by hand, as moduleResolution "node" does not read the exports map)
  const contrib = '@electric-sql/pglite/contrib/btree_gist';
  const { btree_gist } = (await import(contrib)) as { btree_gist: import('@electric-sql/pglite').Extension };
  const pglite = new PGlite(path.join(config.dataDir, 'pglite'), { extensions: { btree_gist } });
  await pglite.waitReady;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ClientPgLite = require('knex-pglite');
  const db = knexFactory({ client: ClientPgLite, connection: { pglite } as never });
  if (migrate) await migrateLatest(db);
  // PGlite has a single session: drop to the application role for everything after migrations.
  await db.raw('SET ROLE fhir_app');
  return {
    app: db,
    owner: db,
    engine: 'pglite',
    close: async () => {
      await db.destroy();
    },
  };
}
