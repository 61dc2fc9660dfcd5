/** Loads the demo practice into the demo tenant once (skipped when it already has data). */
import type { Knex } from 'knex';
import type { Config } from '../config';
import { inTenant } from '../db/tenant-tx';
import { handleBundle } from '../fhir/bundle';
import type { TenantContext } from '../fhir/types';
import { demoBundle } from './demo-data';

export async function loadDemoData(db: Knex, config: Config): Promise<boolean> {
  const has = await inTenant(db, 'demo', async (tx) => {
    const r = await tx.raw(`SELECT 1 FROM resources WHERE tenant_id = ? LIMIT 1`, [tx.tenant]);
    return r.rows.length > 0;
  });
  if (has) return false;
  const ctx: TenantContext = { tenant: 'demo', baseUrl: `${config.publicUrl}/fhir/demo`, config, db, settings: {} };
  await handleBundle(ctx, { method: 'POST', segments: [], query: [], headers: {}, body: demoBundle() });
  return true;
}
