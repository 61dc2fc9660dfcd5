/**
 * The rolling horizon (server/scheduling/horizon.ts): writing a PractitionerRole with hours queues
 * tomorrow's run; each run, on the job clock, extends the Slots to clock + slotHorizonDays and
 * queues the next day's run, once per day however often it is started.
 */
import { startTestServer, TestServer } from './helpers/test-server';
import { bookablePractitioner } from './helpers/scheduling';
import { createJobs } from '../server/jobs';
import { listJobs } from '../server/jobs/outbox';
import { inTenant } from '../server/db/tenant-tx';

const DAY = 86_400_000;
const clock = { t: new Date(), now() { return new Date(this.t); } };
let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s?.close());

const lastSlotStart = async (tenant: string): Promise<Date> =>
  inTenant(s.db.app, tenant, async (tx) => new Date((await tx.raw(`SELECT max(start_at) AS m FROM sched_slot WHERE tenant_id = ?`, [tenant])).rows[0].m));
const horizonJobs = (tenant: string) => inTenant(s.db.app, tenant, (tx) => listJobs(tx, 'slots:horizon:'));

test('a daily job moves the horizon on and queues the next day', async () => {
  const tenant = await s.newTenant({ rateLimitPerMinute: 0, slotHorizonDays: 14 });
  await bookablePractitioner(s, { days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] }, `/fhir/${tenant}`);
  const first = await lastSlotStart(tenant);
  expect(first.getTime()).toBeGreaterThan(Date.now() + 12 * DAY);
  expect(first.getTime()).toBeLessThan(Date.now() + 15 * DAY);
  const queued = await horizonJobs(tenant);
  expect(queued).toHaveLength(1);
  expect(queued[0].state).toBe('pending');
  const tomorrow = new Date(Date.now() + DAY).toISOString().slice(0, 10);
  expect(queued[0].key).toBe(`slots:horizon:${tomorrow}`);
  expect(queued[0].runAt.toISOString()).toBe(`${tomorrow}T03:00:00.000Z`);

  // ten days later (the job clock), the run adds the days that came into the horizon
  const jobs = createJobs({ config: s.config, db: s.db.app, tenants: s.tenants, clock }, { onlyTenants: [tenant], redisUrl: null });
  try {
    clock.t = new Date(Date.now() + 10 * DAY);
    await jobs.drain();
    const after = await lastSlotStart(tenant);
    expect(after.getTime() - first.getTime()).toBeGreaterThan(9 * DAY);
    const all = await horizonJobs(tenant);
    expect(all.map((j) => j.state)).toEqual(['done', 'pending']);
    expect(all[0].result).toMatch(/^1 schedule\(s\), \d+ slot\(s\) added$/);
    expect(all[1].key).toBe(`slots:horizon:${new Date(clock.t.getTime() + DAY).toISOString().slice(0, 10)}`);
    // a second write of hours does not queue a second run for the same day
    await bookablePractitioner(s, {}, `/fhir/${tenant}`);
    expect((await horizonJobs(tenant)).filter((j) => j.key === queued[0].key)).toHaveLength(1);
  } finally {
    await jobs.close();
  }
});
