/**
 * Read by id in one round trip: fhir_read() (migrations/005) sets the tenant for its own
 * statement and reads under row-level security.
 */
import type { Knex } from 'knex';
import { singleStatement } from '../db/single-statement';
import type { StoredVersion } from './resource-store';
import { openStoredIn } from '../crypto/at-rest';

export async function fastRead(db: Knex, tenant: string, type: string, id: string): Promise<StoredVersion | undefined> {
  const { rows } = await singleStatement(
    db,
    'fhir_read',
    'SELECT version, last_updated, deleted, content_json FROM fhir_read($1, $2, $3)',
    [tenant, type, id],
  );
  const r = rows[0];
  if (!r) return undefined;
  return {
    type,
    id,
    version: r.version,
    lastUpdated: r.last_updated instanceof Date ? r.last_updated : new Date(r.last_updated),
    deleted: r.deleted,
    json: await openStoredIn(db, tenant, type, id, r.content_json),
  };
}
