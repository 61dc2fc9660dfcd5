/**
 * Micro-benchmark of the database part of a FHIR read, without HTTP: how much do the four round
 * trips of a tenant transaction (BEGIN, set_config, SELECT, COMMIT) cost compared with fewer?
 * Run after `npm run bench:rest` (it reads the Patients in fhir_bench; the server need not run):
 *
 *   npx tsx bench/db-roundtrips.ts            # BENCH_DB_CONCURRENCY=20 BENCH_DB_SECONDS=5
 *
 * One Node process plays one server worker: a pool of BENCH_DB_CONCURRENCY connections as role
 * fhir_app (RLS on), that many reads in flight. Variants (all return the same row):
 *   server          the server's own code path: inTenant() + store.read() on a knex instance built like
 *                   server/db/connection.ts (TenantPgClient; at 36eaf1f: BEGIN+set_config, SELECT, COMMIT)
 *   knex-tx         plain knex transaction + set_config + SELECT (4 round trips; the code before 36eaf1f)
 *   pg-tx           the same four statements on raw `pg` (no knex)
 *   pg-tx-prepared  as pg-tx, SELECT as a named prepared statement
 *   pg-multi        one round trip: "BEGIN; SELECT set_config(..); SELECT ..; COMMIT" as one simple query
 *   pg-function     one round trip: SELECT * FROM bench_read($tenant,$type,$id), a plpgsql function that
 *                   does set_config(.., true) then the SELECT (created here, in fhir_bench only)
 *   pg-session      one round trip steady state: app.tenant set per connection only when it changes
 *                   (session level), then the prepared SELECT, no transaction
 *   pg-plain        ceiling: the prepared SELECT alone, as the owner (no RLS, no set_config)
 * Only 127.0.0.1 is contacted.
 */
import fs from 'node:fs';
import knexFactory from 'knex';
import pg from 'pg';
import { TenantPgClient } from '../server/db/tenant-pg-client';
import { inTenant } from '../server/db/tenant-tx';
import { store } from '../server/store/resource-store';

const URL_ = process.env.BENCH_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/fhir_bench';
if (!['127.0.0.1', 'localhost'].includes(new URL(URL_).hostname)) throw new Error('BENCH_DATABASE_URL must be local');
const C = Number(process.env.BENCH_DB_CONCURRENCY ?? 20);
const SECONDS = Number(process.env.BENCH_DB_SECONDS ?? 5);
const ONLY = process.env.BENCH_DB_VARIANTS?.split(',');
const TENANT = 'bench';
const SELECT = `SELECT res_type, id, version, last_updated, deleted, content::text AS json
  FROM resources WHERE tenant_id = $1 AND res_type = $2 AND id = $3`;

type Read = (id: string) => Promise<unknown>;

/** CPU seconds (utime+stime) of the Postgres backends serving this database, from /proc. */
async function backendCpu(admin: pg.Pool, db: string): Promise<Map<number, number>> {
  const r = await admin.query(`SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [db]);
  const m = new Map<number, number>();
  for (const { pid } of r.rows as Array<{ pid: number }>) {
    try {
      const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      m.set(pid, (Number(f[11]) + Number(f[12])) / 100);
    } catch {
      /* gone */
    }
  }
  return m;
}

let admin: pg.Pool;
const DB_NAME = decodeURIComponent(new URL(URL_).pathname.slice(1));

async function measure(name: string, ids: string[], read: Read) {
  // warm-up 1 s, then measure
  for (const [phase, secs] of [['warm', 1], ['run', SECONDS]] as const) {
    const lat: number[] = [];
    const end = performance.now() + secs * 1000;
    const pg0 = phase === 'run' ? await backendCpu(admin, DB_NAME) : new Map<number, number>();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: C }, async () => {
        while (performance.now() < end) {
          const id = ids[Math.floor(Math.random() * ids.length)];
          const s = performance.now();
          const row = await read(id);
          if (!row) throw new Error(`${name}: no row for ${id}`);
          lat.push(performance.now() - s);
        }
      }),
    );
    if (phase === 'warm') continue;
    const wall = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const pg1 = await backendCpu(admin, DB_NAME);
    let pgCpu = 0;
    for (const [pid, v] of pg1) pgCpu += v - (pg0.get(pid) ?? 0);
    lat.sort((a, b) => a - b);
    const q = (p: number) => lat[Math.min(lat.length - 1, Math.ceil((p / 100) * lat.length) - 1)];
    const cpuPerRead = ((cpu.user + cpu.system) / lat.length).toFixed(0);
    console.log(
      `${name.padEnd(15)} ${String(Math.round(lat.length / wall)).padStart(7)} reads/s  p50 ${q(50).toFixed(2).padStart(6)} ms  p99 ${q(99).toFixed(2).padStart(6)} ms  node CPU ${cpuPerRead.padStart(4)} µs/read  postgres CPU ${String(Math.round((pgCpu * 1e6) / lat.length)).padStart(4)} µs/read`,
    );
  }
}

async function main() {
  const adminUrl = new URL(URL_);
  adminUrl.pathname = '/postgres';
  admin = new pg.Pool({ connectionString: adminUrl.toString(), max: 1 });
  const owner = new pg.Pool({ connectionString: URL_, max: C });
  const ids = (await owner.query(`SELECT id FROM resources WHERE tenant_id = $1 AND res_type = 'Patient' LIMIT 20000`, [TENANT])).rows.map((r) => r.id as string);
  if (!ids.length) throw new Error('no Patients in fhir_bench: run npm run bench:rest first');
  await owner.query(`
    CREATE OR REPLACE FUNCTION bench_read(t text, ty text, rid text)
    RETURNS TABLE (res_type text, id text, version int, last_updated timestamptz, deleted boolean, json text)
    LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM set_config('app.tenant', t, true);
      RETURN QUERY SELECT r.res_type, r.id, r.version, r.last_updated, r.deleted, r.content::text
        FROM resources r WHERE r.tenant_id = t AND r.res_type = ty AND r.id = rid;
    END $$`);
  await owner.query(`GRANT EXECUTE ON FUNCTION bench_read(text, text, text) TO fhir_app`);

  const app = new pg.Pool({ connectionString: URL_, max: C });
  app.on('connect', (c) => void c.query('SET ROLE fhir_app'));
  const sessionTenant = new WeakMap<pg.PoolClient, string>();
  const knex = knexFactory({
    client: 'pg',
    connection: URL_,
    pool: { min: 0, max: C, afterCreate: (conn: pg.Client, done: (e: Error | null, c: pg.Client) => void) => conn.query('SET ROLE fhir_app', (e: Error | null) => done(e, conn)) },
  });

  const serverKnex = knexFactory({
    client: TenantPgClient as never,
    connection: URL_,
    pool: { min: 0, max: C, afterCreate: (conn: pg.Client, done: (e: Error | null, c: pg.Client) => void) => conn.query('SET ROLE fhir_app', (e: Error | null) => done(e, conn)) },
  });

  const variants: Array<[string, Read]> = [
    ['server', (id) => inTenant(serverKnex, TENANT, (tx) => store.read(tx, 'Patient', id))],
    [
      'knex-tx',
      (id) =>
        knex.transaction(async (trx) => {
          await trx.raw(`select set_config('app.tenant', ?, true)`, [TENANT]);
          const r = await trx.raw(
            `SELECT res_type, id, version, last_updated, deleted, content::text AS json FROM resources WHERE tenant_id = ? AND res_type = ? AND id = ?`,
            [TENANT, 'Patient', id],
          );
          return r.rows[0];
        }),
    ],
    [
      'pg-tx',
      async (id) => {
        const c = await app.connect();
        try {
          await c.query('BEGIN');
          await c.query(`select set_config('app.tenant', $1, true)`, [TENANT]);
          const r = await c.query(SELECT, [TENANT, 'Patient', id]);
          await c.query('COMMIT');
          return r.rows[0];
        } finally {
          c.release();
        }
      },
    ],
    [
      'pg-tx-prepared',
      async (id) => {
        const c = await app.connect();
        try {
          await c.query('BEGIN');
          await c.query({ name: 'bench_tenant', text: `select set_config('app.tenant', $1, true)`, values: [TENANT] });
          const r = await c.query({ name: 'bench_select', text: SELECT, values: [TENANT, 'Patient', id] });
          await c.query('COMMIT');
          return r.rows[0];
        } finally {
          c.release();
        }
      },
    ],
    [
      'pg-multi',
      async (id) => {
        // literals are safe here: tenant slugs and FHIR ids are validated ([a-z0-9-], [A-Za-z0-9-.])
        if (!/^[A-Za-z0-9\-.]{1,64}$/.test(id)) throw new Error('bad id');
        const c = await app.connect();
        try {
          const rs = (await c.query(
            `BEGIN; SELECT set_config('app.tenant', '${TENANT}', true); ${SELECT.replace('$1', `'${TENANT}'`).replace('$2', `'Patient'`).replace('$3', `'${id}'`)}; COMMIT`,
          )) as unknown as pg.QueryResult[];
          return rs[2].rows[0];
        } finally {
          c.release();
        }
      },
    ],
    [
      'pg-function',
      async (id) => (await app.query({ name: 'bench_fn', text: 'SELECT * FROM bench_read($1, $2, $3)', values: [TENANT, 'Patient', id] })).rows[0],
    ],
    [
      'pg-session',
      async (id) => {
        const c = await app.connect();
        try {
          if (sessionTenant.get(c) !== TENANT) {
            await c.query(`select set_config('app.tenant', $1, false)`, [TENANT]);
            sessionTenant.set(c, TENANT);
          }
          return (await c.query({ name: 'bench_select', text: SELECT, values: [TENANT, 'Patient', id] })).rows[0];
        } finally {
          c.release();
        }
      },
    ],
    ['pg-plain', async (id) => (await owner.query({ name: 'bench_select', text: SELECT, values: [TENANT, 'Patient', id] })).rows[0]],
  ];
  console.log(`${ids.length} Patients, ${C} reads in flight, ${SECONDS} s per variant, one Node process`);
  try {
    for (const [name, fn] of variants) if (!ONLY || ONLY.includes(name)) await measure(name, ids, fn);
  } finally {
    await knex.destroy();
    await serverKnex.destroy();
    await app.end();
    await owner.end();
    await admin.end();
  }
}

const guard = setTimeout(() => {
  console.error('db-roundtrips: timed out');
  process.exit(2);
}, (SECONDS + 2) * 8 * 1000 + 60_000);
main()
  .then(() => clearTimeout(guard))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
