/**
 * Read by id in one round trip: the fhir_read() function (migrations/005) sets the tenant for its
 * own statement and reads under row-level security. On PostgreSQL it runs as a named prepared
 * statement on a pooled connection (no knex query building); on PGlite through knex.
 */
import type { Knex } from 'knex';
import type { StoredVersion } from './resource-store';

interface PgConn {
  query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: Array<Record<string, unknown>> }>;
}

interface KnexClient {
  setsTenantOnBegin?: boolean;
  acquireConnection(): Promise<PgConn>;
  releaseConnection(c: PgConn): Promise<void>;
}

const SQL = 'SELECT version, last_updated, deleted, content_json FROM fhir_read($1, $2, $3)';

export async function fastRead(db: Knex, tenant: string, type: string, id: string): Promise<StoredVersion | undefined> {
  const client = db.client as unknown as KnexClient;
  let rows: Array<Record<string, unknown>>;
  if (client.setsTenantOnBegin) {
    const conn = await client.acquireConnection();
    try {
      rows = (await conn.query({ name: 'fhir_read', text: SQL, values: [tenant, type, id] })).rows;
    } finally {
      await client.releaseConnection(conn);
    }
  } else {
    rows = (await db.raw('SELECT version, last_updated, deleted, content_json FROM fhir_read(?, ?, ?)', [tenant, type, id])).rows;
  }
  const r = rows[0];
  if (!r) return undefined;
  return {
    type,
    id,
    version: r.version as number,
    lastUpdated: r.last_updated instanceof Date ? r.last_updated : new Date(r.last_updated as string),
    deleted: r.deleted as boolean,
    json: r.content_json as string | null,
  };
}
