/**
 * The rolling horizon: Slots exist for slotHorizonDays ahead (settings.ts). Every day a job per
 * tenant regenerates every Schedule (slots.ts regenerateAll), which adds the day that came into
 * the horizon and drops nothing booked, then enqueues the next day's run. The chain starts when a
 * PractitionerRole with hours is written (and is restored by any such write if it ever broke);
 * job keys are per UTC day, so however often it is started there is one run a day.
 */
import { defineJob, enqueueJob } from '../jobs/outbox';
import type { Tx } from '../db/tenant-tx';
import type { TenantContext } from '../fhir/types';
import { regenerateAll } from './slots';

export const HORIZON_JOB = 'slots-horizon';
/** The daily run, UTC (a quiet hour for practices in the Americas and Europe). */
const RUN_HOUR_UTC = 3;

const dayKey = (d: Date) => `slots:horizon:${d.toISOString().slice(0, 10)}`;

function nextRun(now: Date): Date {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1, RUN_HOUR_UTC));
}

/** Makes sure tomorrow's run is queued (idempotent). */
export async function ensureHorizonJob(tx: Tx, now = new Date()): Promise<void> {
  const at = nextRun(now);
  await enqueueJob(tx, { kind: HORIZON_JOB, key: dayKey(at), runAt: at, payload: {} });
}

defineJob(HORIZON_JOB, async (_job, c) => {
  const ctx: TenantContext = { tenant: c.tenant.id, baseUrl: c.tenant.baseUrl, config: c.config, db: c.db, settings: c.tenant.settings };
  const now = c.clock.now();
  const results = await regenerateAll(c.tx, ctx, now);
  await ensureHorizonJob(c.tx, now);
  const created = results.reduce((n, r) => n + r.created, 0);
  return `${results.length} schedule(s), ${created} slot(s) added`;
});
