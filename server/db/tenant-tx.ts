/**
 * Per-transaction tenant binding: every statement in `fn` runs inside one transaction with
 * app.tenant set (set_config(..., true)), so row-level security applies to all of it.
 *
 * On PostgreSQL the transaction runs directly on a pooled `pg` connection (BEGIN and set_config in
 * one simple-protocol round trip, then the statements, then COMMIT) without knex's transaction
 * machinery, which cost more CPU than the queries themselves. On PGlite it is a knex transaction.
 */
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
  raw(sql: string, bindings?: readonly unknown[]): Promise<QueryResult>;
  /** A nested unit of work (SAVEPOINT): fails alone, without aborting the outer transaction. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
}

interface PgConn {
  query(text: string, values?: unknown[]): Promise<QueryResult>;
  __knex__disposed?: unknown;
}

interface PgPoolClient {
  drivesRawPg?: boolean;
  acquireConnection(): Promise<PgConn>;
  releaseConnection(c: PgConn): Promise<void>;
}

/** `?` -> `$n`. Our SQL never contains a literal question mark (no jsonb ? operators). */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

class PgTx implements Tx {
  private savepoints = 0;
  constructor(
    readonly tenant: string,
    private conn: PgConn,
  ) {}

  raw(sql: string, bindings: readonly unknown[] = []): Promise<QueryResult> {
    return this.conn.query(numbered(sql), bindings as unknown[]);
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

async function pgTransaction<T>(client: PgPoolClient, tenant: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
  if (!TENANT_SLUG.test(tenant)) throw new Error('invalid tenant slug');
  const conn = await client.acquireConnection();
  try {
    await conn.query(`BEGIN; SELECT set_config('app.tenant', '${tenant}', true);`);
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

export async function inTenant<T>(db: Knex, tenant: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const client = db.client as unknown as PgPoolClient;
  if (client.drivesRawPg) return pgTransaction(client, tenant, fn);
  return db.transaction(async (trx) => {
    await trx.raw(`select set_config('app.tenant', ?, true)`, [tenant]);
    return fn(knexTx(trx, tenant));
  });
}
