/**
 * Per-transaction tenant binding: every statement in `fn` runs inside one transaction with
 * app.tenant set (set_config(..., true)), so row-level security applies to all of it.
 *
 * On PostgreSQL the transaction runs directly on a pooled `pg` connection (BEGIN and set_config in
 * one simple-protocol round trip, then the statements, then COMMIT) without knex's transaction
 * machinery, which cost more CPU than the queries themselves. On PGlite it is a knex transaction.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { TENANT_SLUG } from './tenant-pg-client';

export interface QueryResult {
  rows: any[];
  rowCount?: number | null;
}

/** What the store, search and bundle code may do inside a tenant transaction. */
export interface Tx {
  readonly tenant: string;
  /** SQL with `?` placeholders and bound values (never values spliced into SQL). */
  raw(sql: string, bindings?: readonly unknown[], hints?: QueryHints): Promise<QueryResult>;
  /** A nested unit of work (SAVEPOINT): fails alone, without aborting the outer transaction. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
}

interface PgConn {
  query(text: string | { name: string; text: string; values: unknown[] }, values?: unknown[]): Promise<QueryResult>;
  __knex__disposed?: unknown;
  /** Names of the statements prepared on this connection (see runPrepared). */
  __prepared?: Set<string>;
  /** Read sessions: the tenant this connection's app.tenant is set to (session level). */
  __tenant?: string;
  /** Read sessions: true while plan_cache_mode is force_generic_plan on this connection. */
  __generic?: boolean;
}

/** How a statement may be planned (honoured by read sessions; transactions ignore it). */
export interface QueryHints {
  /**
   * The statement's plan does not depend on its values (search.ts genericPlanSafe: one value of a
   * string, token, reference or uri parameter): its prepared statement may use one generic plan
   * instead of being planned on every execution (planning was most of Postgres' time for such
   * searches).
   */
  generic?: boolean;
}

/** Per-transaction settings sent with BEGIN, in the same round trip. */
export interface TxOptions {
  /** SET LOCAL statement_timeout (ms); 0 or absent = the server default. */
  statementTimeoutMs?: number;
}

/**
 * Statements are prepared (named) per connection, so Postgres parses a statement shape once per
 * connection instead of on every request (each execution is still planned for its values unless a
 * read session asks for a generic plan, see connection.ts); beyond this many per connection the
 * rest run unnamed (a connection never grows without bound).
 */
const MAX_PREPARED = 200;

interface PgPoolClient {
  drivesRawPg?: boolean;
  acquireConnection(): Promise<PgConn>;
  releaseConnection(c: PgConn): Promise<void>;
}

/** A prepared statement's name: a digest of its text (same text, same name, on every connection). */
function statementName(text: string): string {
  return 'q' + createHash('sha1').update(text).digest('base64url').slice(0, 22);
}

/** `?` -> `$n`. Our SQL never contains a literal question mark (no jsonb ? operators). */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

function runPrepared(conn: PgConn, sql: string, bindings: readonly unknown[]): Promise<QueryResult> {
  const text = numbered(sql);
  const prepared = (conn.__prepared ??= new Set());
  const name = statementName(text);
  if (prepared.has(name) || prepared.size < MAX_PREPARED) {
    prepared.add(name);
    return conn.query({ name, text, values: bindings as unknown[] });
  }
  return conn.query(text, bindings as unknown[]);
}

class PgTx implements Tx {
  private savepoints = 0;
  constructor(
    readonly tenant: string,
    private conn: PgConn,
  ) {}

  raw(sql: string, bindings: readonly unknown[] = []): Promise<QueryResult> {
    return runPrepared(this.conn, sql, bindings);
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const name = `sp_${++this.savepoints}`;
    await this.conn.query(`SAVEPOINT ${name}`);
    try {
      const result = await fn(this);
      await this.conn.query(`RELEASE SAVEPOINT ${name}`);
      return result;
    } catch (e) {
      await this.conn.query(`ROLLBACK TO SAVEPOINT ${name}`);
      throw e;
    }
  }
}

/** The SET LOCAL statements for `opts` (empty when there are none). */
export function localSettings(opts: TxOptions): string {
  const ms = Math.floor(opts.statementTimeoutMs ?? 0);
  return ms > 0 ? ` SET LOCAL statement_timeout = ${ms};` : '';
}

async function pgTransaction<T>(client: PgPoolClient, tenant: string, fn: (tx: Tx) => Promise<T>, opts: TxOptions): Promise<T> {
  if (!TENANT_SLUG.test(tenant)) throw new Error('invalid tenant slug');
  const conn = await client.acquireConnection();
  try {
    await conn.query(`BEGIN; SELECT set_config('app.tenant', '${tenant}', true);${localSettings(opts)}`);
    let result: T;
    try {
      result = await fn(new PgTx(tenant, conn));
    } catch (e) {
      try {
        await conn.query('ROLLBACK');
      } catch {
        conn.__knex__disposed = e; // broken connection: the pool must not hand it out again
      }
      throw e;
    }
    await conn.query('COMMIT');
    return result;
  } finally {
    await client.releaseConnection(conn);
  }
}

function knexTx(trx: Knex.Transaction, tenant: string): Tx {
  return {
    tenant,
    raw: (sql, bindings = []) => trx.raw(sql, bindings as Knex.RawBinding[]) as unknown as Promise<QueryResult>,
    transaction: (fn) => trx.transaction((inner) => fn(knexTx(inner, tenant))),
  };
}

export async function inTenant<T>(db: Knex, tenant: string, fn: (tx: Tx) => Promise<T>, opts: TxOptions = {}): Promise<T> {
  const client = db.client as unknown as PgPoolClient;
  if (client.drivesRawPg) return pgTransaction(client, tenant, fn, opts);
  return db.transaction(async (trx) => {
    await trx.raw(`select set_config('app.tenant', ?, true)`, [tenant]);
    const settings = localSettings(opts);
    if (settings) await trx.raw(settings);
    return fn(knexTx(trx, tenant));
  });
}

/**
 * Read sessions (searches): on PostgreSQL a search needs no transaction. Its statements run one by
 * one (each its own snapshot, as they would be in a READ COMMITTED transaction) on a connection of
 * a separate pool that nothing else uses, whose app.tenant is set at session level and changed
 * only when a request of another tenant takes the connection. A search is then one round trip
 * instead of three (BEGIN + set_config, the query, COMMIT). The pool's connections carry the
 * search statement_timeout as their session default (server/db/connection.ts).
 */
const readPools = new WeakMap<Knex, Knex>();

/** Registers `reads` as the read-session pool of the application connection `app`. */
export function setReadPool(app: Knex, reads: Knex): void {
  readPools.set(app, reads);
}

class SessionTx implements Tx {
  constructor(
    readonly tenant: string,
    private conn: PgConn,
  ) {}

  async raw(sql: string, bindings: readonly unknown[] = [], hints: QueryHints = {}): Promise<QueryResult> {
    const generic = !!hints.generic;
    if (!!this.conn.__generic !== generic) {
      // switched only when the next statement needs the other mode (a run of one kind of search
      // pays nothing)
      await this.conn.query(`SET plan_cache_mode = ${generic ? 'force_generic_plan' : 'force_custom_plan'}`);
      this.conn.__generic = generic;
    }
    return runPrepared(this.conn, sql, bindings);
  }

  /** Reads only: nothing to undo, so a nested unit is the unit itself. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return fn(this);
  }
}

/**
 * Runs read-only `fn` for `tenant`: in a read session when `db` has a read pool, otherwise in a
 * tenant transaction with `opts` (PGlite). `fn` must not write.
 */
export async function inTenantRead<T>(db: Knex, tenant: string, fn: (tx: Tx) => Promise<T>, opts: TxOptions = {}): Promise<T> {
  const reads = readPools.get(db);
  if (!reads) return inTenant(db, tenant, fn, opts);
  if (!TENANT_SLUG.test(tenant)) throw new Error('invalid tenant slug');
  const client = reads.client as unknown as PgPoolClient;
  const conn = await client.acquireConnection();
  try {
    if (conn.__tenant !== tenant) {
      conn.__tenant = undefined;
      await conn.query(`SELECT set_config('app.tenant', '${tenant}', false)`);
      conn.__tenant = tenant;
    }
    return await fn(new SessionTx(tenant, conn));
  } finally {
    await client.releaseConnection(conn);
  }
}
