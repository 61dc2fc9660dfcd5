/**
 * One statement outside an explicit transaction, for the single-round-trip paths (fhir_read,
 * fhir_create). On PostgreSQL it runs as a named prepared statement on a pooled pg connection;
 * on PGlite through knex. `sql` uses $1..$n placeholders; values are always bound.
 */
import type { Knex } from 'knex';
import type { QueryResult } from './tenant-tx';

interface PgConn {
  query(config: { name: string; text: string; values: unknown[] }): Promise<QueryResult>;
}

interface PoolClient {
  drivesRawPg?: boolean;
  acquireConnection(): Promise<PgConn>;
  releaseConnection(c: PgConn): Promise<void>;
}

export async function singleStatement(db: Knex, name: string, sql: string, values: unknown[]): Promise<QueryResult> {
  const client = db.client as unknown as PoolClient;
  if (!client.drivesRawPg) {
    return (await db.raw(sql.replace(/\$\d+/g, '?'), values as Knex.RawBinding[])) as unknown as QueryResult;
  }
  const conn = await client.acquireConnection();
  try {
    return await conn.query({ name, text: sql, values });
  } finally {
    await client.releaseConnection(conn);
  }
}
