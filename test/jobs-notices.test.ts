/**
 * Appointment notifications through the outbox and the in-process runner (no REDIS_URL), with a
 * real SMTP server (smtp-server) and an injected clock: confirmation now, reminders 48 h and 2 h
 * before, retracted on cancel and reschedule, quiet hours, waitlist offers, a Communication for
 * every message sent, nothing for a rolled-back transaction, nothing twice.
 */
import type { Appointment, Communication } from 'fhir/r4';
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { startSmtp, TestSmtp } from './helpers/smtp';
import { inTenant, Tx } from '../server/db/tenant-tx';
import { store } from '../server/store/resource-store';
import { createJobs, defineJob, enqueueJob, Jobs, listJobs } from '../server/jobs';
import { enqueueWaitlistOffer, planAppointmentNotices, reminderTimes, AppointmentChange } from '../server/jobs/appointment-notices';
import { formatInZone } from '../server/jobs/zoned-time';
import { issuesOf } from '../server/fhir/validate';
import type { TenantSettings } from '../server/fhir/types';

let s: TestServer;
let smtp: TestSmtp;
const clock = { t: new Date(), now() { return new Date(this.t); } };
const HOUR = 3_600_000;

beforeAll(async () => {
  smtp = await startSmtp();
  s = await startTestServer({ SMTP_URL: smtp.url, MAIL_FROM: 'Practice <practice@example.org>' });
});
afterAll(async () => {
  await s.close();
  await smtp.close();
});

interface World {
  tenant: string;
  jobs: Jobs;
  patient: string;
  practitioner: string;
  location: string;
  settings: TenantSettings;
}

async function post(tenant: string, resource: Record<string, unknown>): Promise<string> {
  const r = await s.http.post(`/fhir/${tenant}/${resource.resourceType}`).set('Content-Type', FHIR_JSON).send(resource);
  expect(r.status).toBe(201);
  return r.body.id;
}

async function world(settings: TenantSettings = {}, email: string | null = 'ana@patient.example'): Promise<World> {
  const full = { rateLimitPerMinute: 0, ...settings };
  const tenant = await s.newTenant(full);
  const jobs = createJobs({ config: s.config, db: s.db.app, tenants: s.tenants, clock }, { onlyTenants: [tenant], redisUrl: null, backoffMs: () => 60_000 });
  const patient = await post(tenant, {
    resourceType: 'Patient',
    name: [{ family: 'Sousa', given: ['Ana'] }],
    ...(email ? { telecom: [{ system: 'email', value: email }] } : {}),
    extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/timezone', valueCode: 'America/New_York' }],
  });
  const practitioner = await post(tenant, { resourceType: 'Practitioner', name: [{ family: 'Rivera', given: ['Dana'], prefix: ['Dr.'] }] });
  const location = await post(tenant, { resourceType: 'Location', name: 'Harbor Street Practice', address: { line: ['12 Harbor Street'], city: 'Portland' } });
  return { tenant, jobs, patient, practitioner, location, settings: full };
}

/** A start time `days` days from the clock at 14:00 UTC. */
function startIn(days: number, hourUtc = 14): Date {
  const d = new Date(clock.now().getTime() + days * 24 * HOUR);
  d.setUTCHours(hourUtc, 0, 0, 0);
  return d;
}

async function bookAppointment(w: World, start: Date): Promise<Appointment> {
  const r = await s.http.post(`/fhir/${w.tenant}/Appointment`).set('Content-Type', FHIR_JSON).send({
    resourceType: 'Appointment',
    status: 'booked',
    start: start.toISOString(),
    end: new Date(start.getTime() + HOUR / 2).toISOString(),
    participant: [
      { actor: { reference: `Patient/${w.patient}` }, status: 'accepted' },
      { actor: { reference: `Practitioner/${w.practitioner}` }, status: 'accepted' },
      { actor: { reference: `Location/${w.location}` }, status: 'accepted' },
    ],
  });
  expect(r.status).toBe(201);
  await inTenant(s.db.app, w.tenant, (tx) => planAppointmentNotices(tx, { settings: w.settings, clock }, r.body, 'booked'));
  return r.body;
}

/** What the scheduling operations do: change the Appointment and plan its notices in one transaction. */
async function changeAppointment(w: World, a: Appointment, edit: Partial<Appointment>, change: AppointmentChange): Promise<Appointment> {
  return inTenant(s.db.app, w.tenant, async (tx) => {
    const written = await store.update(tx, { ...a, ...edit } as Appointment, a.id!, { baseUrl: `${s.url}/fhir/${w.tenant}` });
    await planAppointmentNotices(tx, { settings: w.settings, clock }, written.resource as Appointment, change, a);
    return written.resource as Appointment;
  });
}

const jobsOf = (w: World, prefix = '') => inTenant(s.db.app, w.tenant, (tx) => listJobs(tx, prefix));
const mailsTo = (addr: string) => smtp.received.filter((m) => m.to.includes(addr));

async function communications(w: World): Promise<Communication[]> {
  const r = await s.http.get(`/fhir/${w.tenant}/Communication?subject=Patient/${w.patient}&_sort=sent`);
  expect(r.status).toBe(200);
  return (r.body.entry ?? []).map((e: { resource: Communication }) => e.resource);
}

test('a job enqueued in a transaction that rolls back is never run or sent', async () => {
  const w = await world({}, 'rollback@patient.example');
  await expect(
    inTenant(s.db.app, w.tenant, async (tx: Tx) => {
      const a = await store.create(tx, {
        resourceType: 'Appointment',
        status: 'booked',
        start: startIn(3).toISOString(),
        end: new Date(startIn(3).getTime() + HOUR).toISOString(),
        participant: [{ actor: { reference: `Patient/${w.patient}` }, status: 'accepted' }],
      } as Appointment);
      const planned = await planAppointmentNotices(tx, { settings: w.settings, clock }, a.resource as Appointment, 'booked');
      expect(planned.enqueued).toBe(3);
      throw new Error('the booking fails after planning its notices');
    }),
  ).rejects.toThrow('the booking fails');
  expect(await jobsOf(w)).toEqual([]);
  clock.t = new Date(clock.t.getTime() + 10 * 24 * HOUR);
  try {
    await w.jobs.drain();
  } finally {
    clock.t = new Date(clock.t.getTime() - 10 * 24 * HOUR);
  }
  expect(mailsTo('rollback@patient.example')).toEqual([]);
  expect(await communications(w)).toEqual([]);
});

test('booking: confirmation now, reminders 48 h and 2 h before, over SMTP in the patient\'s zone, each a Communication', async () => {
  const w = await world({ cancellationPolicy: 'Cancel 24 hours ahead or pay half the fee.' }, 'ana.booked@patient.example');
  const t0 = clock.t;
  const start = startIn(5);
  const a = await bookAppointment(w, start);
  const planned = await jobsOf(w, `appt:${a.id}:`);
  expect(planned.map((j) => [j.kind, j.runAt.getTime() - start.getTime()])).toEqual([
    ['appointment.confirmation', t0.getTime() - start.getTime()],
    ['appointment.reminder', -48 * HOUR],
    ['appointment.reminder', -2 * HOUR],
  ]);
  // Planning the same booking again (a retried request) adds nothing.
  await inTenant(s.db.app, w.tenant, async (tx) => {
    expect((await planAppointmentNotices(tx, { settings: w.settings, clock }, a, 'booked')).enqueued).toBe(0);
  });

  await w.jobs.drain();
  const to = 'ana.booked@patient.example';
  expect(mailsTo(to).map((m) => m.subject)).toEqual(['Your appointment is confirmed']);
  const confirmation = mailsTo(to)[0].text;
  expect(confirmation).toContain(formatInZone(start, 'America/New_York')); // 09:00 New York for 14:00 UTC in winter, 10:00 in summer
  expect(confirmation).toContain('(America/New_York)');
  expect(confirmation).toContain('with Dr. Dana Rivera');
  expect(confirmation).toContain('Harbor Street Practice, 12 Harbor Street, Portland');
  expect(confirmation).toContain('Cancel 24 hours ahead or pay half the fee.');

  clock.t = new Date(start.getTime() - 48 * HOUR - 60_000);
  await w.jobs.drain();
  expect(mailsTo(to)).toHaveLength(1); // not yet
  clock.t = new Date(start.getTime() - 48 * HOUR);
  await w.jobs.drain();
  expect(mailsTo(to).map((m) => m.subject)).toEqual(['Your appointment is confirmed', 'Reminder: your appointment']);
  clock.t = new Date(start.getTime() - 2 * HOUR + 1000);
  await w.jobs.drain();
  await w.jobs.drain(); // a second pass finds nothing more
  expect(mailsTo(to).map((m) => m.subject)).toEqual(['Your appointment is confirmed', 'Reminder: your appointment', 'Reminder: your appointment']);
  expect(new Set(mailsTo(to).map((m) => m.messageId)).size).toBe(3);
  expect((await jobsOf(w, `appt:${a.id}:`)).map((j) => j.state)).toEqual(['done', 'done', 'done']);

  const comms = await communications(w);
  expect(comms).toHaveLength(3);
  for (const c of comms) {
    expect(issuesOf(c, 'Communication').filter((i) => i.severity === 'error')).toEqual([]);
    expect(c.status).toBe('completed');
    expect(c.subject).toEqual({ reference: `Patient/${w.patient}` });
    expect(c.recipient).toEqual([{ reference: `Patient/${w.patient}` }]);
    expect(c.about).toEqual([{ reference: `Appointment/${a.id}` }]);
    expect(c.medium?.[0].coding?.[0].code).toBe('EMAILWRIT');
    expect(c.sent).toBeDefined();
    // no PHI beyond what is needed: no name, address, time or practitioner in the record
    expect(JSON.stringify(c.payload)).not.toMatch(/Ana|Sousa|Rivera|Harbor|ana\.booked/);
  }
  expect(comms.map((c) => c.payload?.[0].contentString)).toEqual([
    'Appointment confirmation sent by email.',
    'Appointment reminder (2 days ahead) sent by email.',
    'Appointment reminder (2 hours ahead) sent by email.',
  ]);
  // the Communications are found from the Appointment too
  const about = await s.http.get(`/fhir/${w.tenant}/Communication?about=Appointment/${a.id}`);
  expect(about.body.total).toBe(3);
  clock.t = t0;
});

test('cancelling retracts the pending reminders and sends the cancellation', async () => {
  const w = await world({}, 'ana.cancel@patient.example');
  const t0 = clock.t;
  const start = startIn(4);
  const a = await bookAppointment(w, start);
  await w.jobs.drain();
  clock.t = new Date(start.getTime() - 48 * HOUR + 1000);
  await w.jobs.drain(); // the 48 h reminder went out
  await changeAppointment(w, a, { status: 'cancelled' }, 'cancelled');
  const jobs = await jobsOf(w, `appt:${a.id}:`);
  expect(jobs.map((j) => `${j.kind} ${j.state}`).sort()).toEqual([
    'appointment.cancellation pending',
    'appointment.confirmation done',
    'appointment.reminder done',
    'appointment.reminder retracted',
  ]);
  clock.t = new Date(start.getTime() + HOUR);
  await w.jobs.drain();
  const to = 'ana.cancel@patient.example';
  expect(mailsTo(to).map((m) => m.subject)).toEqual(['Your appointment is confirmed', 'Reminder: your appointment', 'Your appointment has been cancelled']);
  expect(mailsTo(to)[2].text).toContain(formatInZone(start, 'America/New_York'));
  expect((await communications(w)).map((c) => c.payload?.[0].contentString)).toContain('Appointment cancellation sent by email.');
  clock.t = t0;
});

test('rescheduling retracts the old reminders and plans the new ones', async () => {
  const w = await world({}, 'ana.moved@patient.example');
  const t0 = clock.t;
  const start = startIn(6);
  const a = await bookAppointment(w, start);
  await w.jobs.drain();
  const later = new Date(start.getTime() + 24 * HOUR);
  const moved = await changeAppointment(w, a, { start: later.toISOString(), end: new Date(later.getTime() + HOUR / 2).toISOString() }, 'rescheduled');
  // the same change planned again (a retry) changes nothing
  await inTenant(s.db.app, w.tenant, async (tx) => {
    expect(await planAppointmentNotices(tx, { settings: w.settings, clock }, moved, 'rescheduled', a)).toEqual({ enqueued: 0, retracted: 0 });
  });
  const jobs = await jobsOf(w, `appt:${a.id}:`);
  const live = jobs.filter((j) => j.state === 'pending').map((j) => [j.kind, j.runAt.getTime() - later.getTime()]);
  expect(live).toEqual([
    ['appointment.confirmation', t0.getTime() - later.getTime()],
    ['appointment.reminder', -48 * HOUR],
    ['appointment.reminder', -2 * HOUR],
  ]);
  expect(jobs.filter((j) => j.state === 'retracted').map((j) => j.kind)).toEqual(['appointment.reminder', 'appointment.reminder']);
  clock.t = new Date(later.getTime() + HOUR);
  await w.jobs.drain();
  const to = 'ana.moved@patient.example';
  expect(mailsTo(to).map((m) => m.subject)).toEqual([
    'Your appointment is confirmed',
    'Your appointment has been moved',
    'Reminder: your appointment',
    'Reminder: your appointment',
  ]);
  expect(mailsTo(to).slice(1).every((m) => m.text.includes(formatInZone(later, 'America/New_York')))).toBe(true);
  clock.t = t0;
});

test('quiet hours (practice time zone): a reminder that falls in them moves to before the quiet window', async () => {
  const settings: TenantSettings = { timeZone: 'Europe/Paris', quietHours: { start: '21:00', end: '08:00' } };
  // 09:00 Paris on 10 March 2027 (08:00 UTC): the 2 h reminder (07:00 Paris) is quiet -> 20:30 Paris the evening before
  const start = new Date('2027-03-10T08:00:00Z');
  const now = new Date('2027-03-01T12:00:00Z');
  expect(reminderTimes(start, now, settings).map((r) => [r.offsetMinutes, r.at.toISOString()])).toEqual([
    [2880, '2027-03-08T08:00:00.000Z'], // 09:00 Paris, not quiet
    [120, '2027-03-09T19:30:00.000Z'], // 20:30 Paris
  ]);
  // booked in the night, after that evening: the reminder goes out when quiet hours end (08:00 Paris)
  expect(reminderTimes(start, new Date('2027-03-09T22:00:00Z'), settings).map((r) => [r.offsetMinutes, r.at.toISOString()])).toEqual([
    [120, '2027-03-10T07:00:00.000Z'],
  ]);
  // a window that does not cross midnight, and a custom list of offsets
  expect(
    reminderTimes(new Date('2027-03-10T15:00:00Z'), now, { timeZone: 'UTC', quietHours: { start: '12:00', end: '14:00' }, reminderOffsetsMinutes: [120, 60] }).map((r) => r.at.toISOString()),
  ).toEqual(['2027-03-10T11:30:00.000Z', '2027-03-10T14:00:00.000Z']);
  // no reminders configured
  expect(reminderTimes(start, now, { reminderOffsetsMinutes: [] })).toEqual([]);

  // and the planned jobs follow the rule
  const w = await world(settings, 'ana.quiet@patient.example');
  const t0 = clock.t;
  const s9 = startIn(5, 8); // 08:00 UTC = 09:00 Paris in winter, 10:00 in summer
  const a = await bookAppointment(w, s9);
  const expected = reminderTimes(s9, clock.now(), w.settings).map((r) => r.at.getTime());
  const reminders = (await jobsOf(w, `appt:${a.id}:reminder:`)).map((j) => j.runAt.getTime());
  expect(reminders).toEqual(expected);
  expect(reminders).toContain(s9.getTime() - 48 * HOUR);
  expect(reminders).not.toContain(s9.getTime() - 2 * HOUR); // 07:00 or 08:00 Paris: moved
  clock.t = t0;
});

test('a job runs to completion at most once: redelivery and a second runner find it done', async () => {
  const w = await world({}, 'ana.once@patient.example');
  const a = await bookAppointment(w, startIn(3));
  const other = createJobs({ config: s.config, db: s.db.app, tenants: s.tenants, clock }, { onlyTenants: [w.tenant], redisUrl: null });
  await Promise.all([w.jobs.drain(), other.drain(), w.jobs.drain(), other.drain()]);
  await other.close();
  expect(mailsTo('ana.once@patient.example')).toHaveLength(1);
  expect((await communications(w)).length).toBe(1);
  expect((await jobsOf(w, `appt:${a.id}:confirmation:`))[0].state).toBe('done');
});

test('a failing job is retried with backoff, its writes rolled back each time', async () => {
  const w = await world();
  let calls = 0;
  defineJob('test.flaky', async (_job, ctx) => {
    calls++;
    await store.create(ctx.tx, { resourceType: 'Basic', code: { text: `attempt ${calls}` } } as never);
    if (calls < 3) throw new Error(`flaky failure ${calls}`);
    return 'worked';
  });
  await inTenant(s.db.app, w.tenant, (tx) => enqueueJob(tx, { kind: 'test.flaky', key: 'flaky:1', payload: {}, runAt: clock.now() }));
  const t0 = clock.t;
  await w.jobs.drain();
  let [j] = await jobsOf(w, 'flaky:');
  expect([j.state, j.attempts, j.lastError, j.runAt.getTime() - t0.getTime()]).toEqual(['pending', 1, 'flaky failure 1', 60_000]);
  clock.t = new Date(t0.getTime() + 60_000);
  await w.jobs.drain();
  clock.t = new Date(t0.getTime() + 120_000);
  await w.jobs.drain();
  [j] = await jobsOf(w, 'flaky:');
  expect([j.state, j.attempts, j.result]).toEqual(['done', 2, 'worked']);
  const basics = await s.http.get(`/fhir/${w.tenant}/Basic`);
  expect(basics.body.entry.map((e: { resource: { code: { text: string } } }) => e.resource.code.text)).toEqual(['attempt 3']);
  // a job with no handler in this process fails (and is retried) instead of vanishing
  await inTenant(s.db.app, w.tenant, (tx) => enqueueJob(tx, { kind: 'test.unknown', key: 'unknown:1', payload: {}, runAt: clock.now() }));
  await w.jobs.drain();
  expect((await jobsOf(w, 'unknown:'))[0]).toMatchObject({ state: 'pending', attempts: 1, lastError: 'no handler for job kind "test.unknown" in this process' });
  clock.t = t0;
});

test('a waitlist offer carries the claim link; an expired offer is not sent; no email address, no message', async () => {
  const w = await world({}, 'ana.wait@patient.example');
  const schedule = await post(w.tenant, { resourceType: 'Schedule', actor: [{ reference: `Practitioner/${w.practitioner}` }, { reference: `Location/${w.location}` }] });
  const start = startIn(2);
  const slot = await post(w.tenant, { resourceType: 'Slot', schedule: { reference: `Schedule/${schedule}` }, status: 'free', start: start.toISOString(), end: new Date(start.getTime() + HOUR).toISOString() });
  const claimUrl = `${s.url}/portal/claim?offer=abc123`;
  await inTenant(s.db.app, w.tenant, async (tx) => {
    await enqueueWaitlistOffer(tx, { settings: w.settings, clock }, { patient: w.patient, slot, claimUrl, expiresAt: new Date(clock.now().getTime() + 2 * HOUR) });
    // the same offer twice: one job
    expect((await enqueueWaitlistOffer(tx, { settings: w.settings, clock }, { patient: w.patient, slot, claimUrl, expiresAt: new Date(clock.now().getTime() + 2 * HOUR) })).created).toBe(false);
    await enqueueWaitlistOffer(tx, { settings: w.settings, clock }, { patient: w.patient, slot, claimUrl, expiresAt: new Date(clock.now().getTime() - 1), key: 'waitlist:expired' });
  });
  await w.jobs.drain();
  const [offer, ...rest] = mailsTo('ana.wait@patient.example');
  expect(rest).toEqual([]);
  expect(offer.subject).toBe('An appointment time has become available');
  expect(offer.text).toContain(claimUrl);
  expect(offer.text).toContain(formatInZone(start, 'America/New_York'));
  expect(offer.text).toContain('with Dr. Dana Rivera');
  const comms = await communications(w);
  expect(comms.map((c) => [c.about?.[0].reference, c.payload?.[0].contentString])).toEqual([[`Slot/${slot}`, 'Waitlist offer sent by email.']]);
  expect((await jobsOf(w, 'waitlist:expired'))[0]).toMatchObject({ state: 'done', result: 'skipped: offer expired' });

  const nomail = await world({}, null);
  const a = await bookAppointment(nomail, startIn(3));
  await nomail.jobs.drain();
  expect((await jobsOf(nomail, `appt:${a.id}:confirmation:`))[0]).toMatchObject({ state: 'done', result: 'skipped: no email address' });
  expect(await communications(nomail)).toEqual([]);
});

test('without SMTP_URL (demo) the messages go to the local outbox page', async () => {
  const demo = await startTestServer({ DEMO: 'true', SMTP_URL: '' });
  try {
    const tenant = await demo.newTenant();
    const jobs = createJobs({ config: demo.config, db: demo.db.app, tenants: demo.tenants, clock }, { onlyTenants: [tenant], redisUrl: null });
    const r = await demo.http.post(`/fhir/${tenant}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', telecom: [{ system: 'email', value: 'outbox@patient.example' }] });
    const start = startIn(3);
    const ap = await demo.http.post(`/fhir/${tenant}/Appointment`).set('Content-Type', FHIR_JSON).send({
      resourceType: 'Appointment', status: 'booked', start: start.toISOString(), end: new Date(start.getTime() + HOUR).toISOString(),
      participant: [{ actor: { reference: `Patient/${r.body.id}` }, status: 'accepted' }],
    });
    await inTenant(demo.db.app, tenant, (tx) => planAppointmentNotices(tx, { settings: {}, clock }, ap.body, 'booked'));
    await jobs.drain();
    await jobs.close();
    const page = await demo.anon.get(`/outbox/${tenant}`);
    expect(page.status).toBe(200);
    expect(page.text).toContain('Your appointment is confirmed');
    expect(page.text).toContain('outbox@patient.example');
    expect(page.text).toContain('appointment.confirmation');
    const old = await demo.anon.get(`/auth/${tenant}/outbox`);
    expect([old.status, old.headers.location]).toEqual([302, `/outbox/${tenant}`]);
    // the mail went nowhere else
    expect(mailsTo('outbox@patient.example')).toEqual([]);
    expect((await demo.http.get(`/fhir/${tenant}/Communication`)).body.total).toBe(1);
  } finally {
    await demo.close();
  }
  // with SMTP_URL there is no outbox page
  expect((await s.anon.get(`/outbox/${s.tenant}`)).status).toBe(404);
});

test('finished jobs are purged after keepFinishedDays (their key can be used again); runs are counted in /metrics', async () => {
  const w = await world();
  defineJob('test.noop', async () => 'nothing to do');
  const t0 = clock.t;
  await inTenant(s.db.app, w.tenant, (tx) => enqueueJob(tx, { kind: 'test.noop', key: 'noop:1', payload: {}, runAt: clock.now() }));
  await w.jobs.drain();
  expect((await jobsOf(w, 'noop:'))[0]).toMatchObject({ state: 'done', result: 'nothing to do' });
  clock.t = new Date(t0.getTime() + 179 * 24 * HOUR);
  await w.jobs.runDue();
  expect(await jobsOf(w, 'noop:')).toHaveLength(1);
  clock.t = new Date(t0.getTime() + 181 * 24 * HOUR);
  await w.jobs.runDue();
  expect(await jobsOf(w, 'noop:')).toHaveLength(0);
  await inTenant(s.db.app, w.tenant, async (tx) => expect((await enqueueJob(tx, { kind: 'test.noop', key: 'noop:1', payload: {} })).created).toBe(true));
  clock.t = t0;
  const metrics = await s.anon.get('/metrics');
  expect(metrics.text).toMatch(/jobs_runs_total\{kind="test.noop",outcome="done"\} \d+/);
  expect(metrics.text).toMatch(/jobs_runs_total\{kind="appointment.confirmation",outcome="done"\} \d+/);
});

test('SMTP unreachable: the message is retried and delivered once when the server is back', async () => {
  const w = await world({}, 'ana.smtp@patient.example');
  const { Mailer } = await import('../server/mail/mailer');
  const down = createJobs(
    { config: s.config, db: s.db.app, tenants: s.tenants, clock, mail: new Mailer({ smtpUrl: 'smtp://127.0.0.1:1', from: 'x@example.org' }) },
    { onlyTenants: [w.tenant], redisUrl: null, backoffMs: () => 60_000 },
  );
  const t0 = clock.t;
  const a = await bookAppointment(w, startIn(4));
  await down.drain();
  await down.close();
  const [job] = await jobsOf(w, `appt:${a.id}:confirmation:`);
  expect(job).toMatchObject({ state: 'pending', attempts: 1 });
  expect(job.lastError).toMatch(/ECONNREFUSED/);
  expect(await communications(w)).toEqual([]); // the record was rolled back with the attempt
  clock.t = new Date(t0.getTime() + 60_000);
  await w.jobs.drain();
  expect(mailsTo('ana.smtp@patient.example').map((m) => m.subject)).toEqual(['Your appointment is confirmed']);
  expect((await communications(w)).length).toBe(1);
  clock.t = t0;
});
