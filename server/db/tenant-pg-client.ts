/**
 * knex's PostgreSQL client, marked so that server/db/tenant-tx.ts and server/store/fast-read.ts
 * run tenant transactions and single-statement reads directly on its pooled `pg` connections.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
const PgClient = require('knex/lib/dialects/postgres/index.js');

/** Tenant ids: lowercase letters, digits, dashes (so they can be sent as SQL literals safely). */
export const TENANT_SLUG = /^[a-z0-9][a-z0-9-]{0,62}$/;

export class TenantPgClient extends PgClient {
  /** This client's pool hands out raw pg connections that tenant-tx.ts drives itself. */
  readonly drivesRawPg = true;
}
