/**
 * knex's PostgreSQL client with one change: a transaction opened for a tenant sends
 * `BEGIN; SELECT set_config('app.tenant', …, true)` as one simple-protocol round trip instead of
 * two. The tenant is a validated slug ([a-z0-9-]), never client text with quotes.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
const PgClient = require('knex/lib/dialects/postgres/index.js');
const PgTransaction = require('knex/lib/dialects/postgres/execution/pg-transaction.js');

export const TENANT_SLUG = /^[a-z0-9][a-z0-9-]{0,62}$/;

class TenantTransaction extends PgTransaction {
  tenant?: string;
  constructor(client: unknown, container: unknown, config: { tenant?: string } | undefined, outerTx: unknown) {
    super(client, container, config, outerTx);
    // begin() runs later (after a connection is acquired), so this is set in time.
    this.tenant = config?.tenant;
  }

  begin(conn: unknown) {
    const tenant = this.tenant;
    if (tenant !== undefined) {
      if (!TENANT_SLUG.test(tenant)) throw new Error('invalid tenant slug');
      return this.query(conn, `BEGIN; SELECT set_config('app.tenant', '${tenant}', true);`);
    }
    return super.begin(conn);
  }
}

export class TenantPgClient extends PgClient {
  /** Marks clients whose transactions set the tenant in BEGIN. */
  readonly setsTenantOnBegin = true;
  transaction(...args: unknown[]) {
    return new (TenantTransaction as new (...a: unknown[]) => unknown)(this, ...args);
  }
}
