/** Per-transaction tenant binding: every statement in `fn` runs with app.tenant set, so RLS applies. */
import type { Knex } from 'knex';

export type Tx = Knex.Transaction & { tenant: string };

export async function inTenant<T>(db: Knex, tenant: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const inBegin = (db.client as { setsTenantOnBegin?: boolean }).setsTenantOnBegin === true;
  return db.transaction(async (trx) => {
    // With TenantPgClient the tenant was set by BEGIN itself (one round trip fewer).
    if (!inBegin) await trx.raw(`select set_config('app.tenant', ?, true)`, [tenant]);
    const tx = trx as Tx;
    tx.tenant = tenant;
    return fn(tx);
  }, { tenant } as Knex.TransactionConfig);
}
