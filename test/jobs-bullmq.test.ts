/**
 * The BullMQ path (REDIS_URL): the relay moves outbox rows to BullMQ and the worker runs them.
 * Against the shared Redis (a prefix of our own) and against a private redis-server that the test
 * stops and starts again: nothing is lost, nothing is sent twice.
 */
import { randomBytes } from 'node:crypto';
import type { Appointment } from 'fhir/r4';
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { startSmtp, TestSmtp } from './helpers/smtp';
import { RedisChild } from './helpers/redis-server';
import { inTenant } from '../server/db/tenant-tx';
import { createJobs, defineJob, enqueueJob, listJobs } from '../server/jobs';
import { planAppointmentNotices } from '../server/jobs/appointment-notices';
import { QueueRelay, QueueRelayOptions } from '../server/jobs/queue-relay';

const SHARED_REDIS = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const HOUR = 3_600_000;
let s: TestServer;
let smtp: TestSmtp;
const relays: QueueRelay[] = [];

beforeAll(async () => {
  smtp = await startSmtp();
  s = await startTestServer({ SMTP_URL: smtp.url });
  defineJob<{ to: string; n: string }>('test.mail', async (job, ctx) => {
    await ctx.mail.send({ tenant: ctx.tenant.id, to: job.payload.to, subject: `message ${job.payload.n}`, text: 'test', messageId: `<job-${job.id}@test>` });
    return 'sent';
  });
});
afterAll(async () => {
  for (const r of relays) {
    await r.queue.obliterate({ force: true }).catch(() => undefined);
    await r.close();
  }
  await s.close();
  await smtp.close();
});

function relay(tenant: string, opts: Partial<QueueRelayOptions> = {}): QueueRelay {
  const r = createJobs(
    { config: s.config, db: s.db.app, tenants: s.tenants },
    { onlyTenants: [tenant], redisUrl: SHARED_REDIS, prefix: `test-jobs-${randomBytes(4).toString('hex')}`, pollMs: 100, ...opts },
  ) as QueueRelay;
  expect(r.mode).toBe('bullmq');
  relays.push(r);
  return r;
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const received = (to: string) => smtp.received.filter((m) => m.to.includes(to));
const jobsOf = (tenant: string, prefix = '') => inTenant(s.db.app, tenant, (tx) => listJobs(tx, prefix));
const mailJob = (tenant: string, to: string, n: string, runAt?: Date) =>
  inTenant(s.db.app, tenant, (tx) => enqueueJob(tx, { kind: 'test.mail', key: `mail:${n}`, payload: { to, n }, runAt }));

async function bookedAppointment(tenant: string, email: string): Promise<Appointment> {
  const p = await s.http.post(`/fhir/${tenant}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', telecom: [{ system: 'email', value: email }] });
  const start = new Date(Date.now() + 5 * 24 * HOUR);
  const a = await s.http.post(`/fhir/${tenant}/Appointment`).set('Content-Type', FHIR_JSON).send({
    resourceType: 'Appointment',
    status: 'booked',
    start: start.toISOString(),
    end: new Date(start.getTime() + HOUR).toISOString(),
    participant: [{ actor: { reference: `Patient/${p.body.id}` }, status: 'accepted' }],
  });
  expect(a.status).toBe(201);
  await inTenant(s.db.app, tenant, (tx) => planAppointmentNotices(tx, { settings: {} }, a.body, 'booked'));
  return a.body;
}

test('REDIS_URL: the relay hands due jobs to BullMQ (delayed until their time), the worker sends each once', async () => {
  const tenant = await s.newTenant();
  const r = relay(tenant, { aheadMs: 60_000 });
  r.startWorker();
  const a = await bookedAppointment(tenant, 'bull@patient.example');
  await r.drain();
  expect(received('bull@patient.example').map((m) => m.subject)).toEqual(['Your appointment is confirmed']);
  // the reminders (days ahead) stay in the outbox until they come within aheadMs
  expect((await jobsOf(tenant, `appt:${a.id}:`)).map((j) => `${j.kind} ${j.state}`)).toEqual([
    'appointment.confirmation done',
    'appointment.reminder pending',
    'appointment.reminder pending',
  ]);
  expect((await s.http.get(`/fhir/${tenant}/Communication?about=Appointment/${a.id}`)).body.total).toBe(1);

  // a job due in 1.5 s is relayed now as a delayed BullMQ job and runs at its time, not before
  const due = new Date(Date.now() + 1500);
  await mailJob(tenant, 'delayed@patient.example', 'd1', due);
  expect(await r.runDue()).toBe(1);
  expect((await jobsOf(tenant, 'mail:d1'))[0].state).toBe('relayed');
  await until('the delayed job', () => received('delayed@patient.example').length > 0, 10_000);
  expect(Date.now()).toBeGreaterThanOrEqual(due.getTime() - 50);
  await r.drain();
  expect(received('delayed@patient.example')).toHaveLength(1);
  // a retracted job that is already in BullMQ is skipped by the worker
  await mailJob(tenant, 'retracted@patient.example', 'r1', new Date(Date.now() + 800));
  await r.runDue();
  await inTenant(s.db.app, tenant, async (tx) => expect(await (await import('../server/jobs')).retractJobs(tx, 'mail:r1')).toBe(1));
  await new Promise((res) => setTimeout(res, 1500));
  expect(received('retracted@patient.example')).toEqual([]);
});

test('a relay crash after adding to BullMQ and before marking relayed: handed over again, run once, sent once', async () => {
  const tenant = await s.newTenant();
  let crashes = 1;
  const r = relay(tenant, {
    beforeMarkRelayed: () => {
      if (crashes-- > 0) throw new Error('relay process died');
    },
  });
  const a = await bookedAppointment(tenant, 'crash@patient.example');
  await expect(r.runDue()).rejects.toThrow('relay process died');
  const [job] = await jobsOf(tenant, `appt:${a.id}:confirmation:`);
  expect(job.state).toBe('pending'); // the mark was rolled back
  expect(await r.queue.getJob(`${job.id}-0`)).toBeDefined(); // but BullMQ has it
  expect(await r.runDue()).toBe(1); // the restarted relay adds it again: same job id, no second BullMQ job
  expect((await jobsOf(tenant, `appt:${a.id}:confirmation:`))[0].state).toBe('relayed');
  const counts = await r.queue.getJobCounts('waiting', 'delayed', 'active', 'completed');
  expect(counts.waiting + counts.delayed).toBe(1);
  r.startWorker();
  await r.drain();
  expect(received('crash@patient.example')).toHaveLength(1);
  // a redelivery of the same BullMQ job (a stalled job, a replay) finds the row done
  expect(await r.process({ tenant, id: job.id, attempt: 0 })).toBe('skipped');
  expect(received('crash@patient.example')).toHaveLength(1);
  expect((await s.http.get(`/fhir/${tenant}/Communication?about=Appointment/${a.id}`)).body.total).toBe(1);
});

test('Redis stopped mid-test: what is enqueued meanwhile, and what Redis lost, arrives after it returns, none twice', async () => {
  const redis = await RedisChild.start();
  const tenant = await s.newTenant();
  const r = createJobs(
    { config: s.config, db: s.db.app, tenants: s.tenants },
    { onlyTenants: [tenant], redisUrl: redis.url, prefix: 'outage', pollMs: 100, replayAfterMs: 1000 },
  ) as QueueRelay;
  try {
    r.start();
    await mailJob(tenant, 'outage@patient.example', 'before');
    await until('the first message', () => received('outage@patient.example').length === 1);
    // relayed as a delayed job, then lost when Redis restarts without persistence
    await mailJob(tenant, 'outage@patient.example', 'lost-in-redis', new Date(Date.now() + 2000));
    await until('the delayed job relayed', async () => (await jobsOf(tenant, 'mail:lost-in-redis'))[0].state === 'relayed');

    await redis.stop();
    await mailJob(tenant, 'outage@patient.example', 'during-1');
    const a = await bookedAppointment(tenant, 'outage-booking@patient.example');
    await mailJob(tenant, 'outage@patient.example', 'during-2');
    await new Promise((res) => setTimeout(res, 1500)); // relay passes fail meanwhile
    expect((await jobsOf(tenant, 'mail:during')).map((j) => j.state)).toEqual(['pending', 'pending']);
    expect(received('outage@patient.example')).toHaveLength(1);

    await redis.start();
    await until(
      'every message after the outage',
      () => received('outage@patient.example').length >= 4 && received('outage-booking@patient.example').length >= 1,
      30_000,
    );
    await new Promise((res) => setTimeout(res, 1500)); // replays and redeliveries would land by now
    expect(received('outage@patient.example').map((m) => m.subject).sort()).toEqual(['message before', 'message during-1', 'message during-2', 'message lost-in-redis']);
    expect(received('outage-booking@patient.example').map((m) => m.subject)).toEqual(['Your appointment is confirmed']);
    expect((await jobsOf(tenant, 'mail:')).map((j) => j.state)).toEqual(['done', 'done', 'done', 'done']);
    expect((await jobsOf(tenant, `appt:${a.id}:confirmation:`))[0].state).toBe('done');
  } finally {
    await r.close();
    await redis.stop();
  }
});
