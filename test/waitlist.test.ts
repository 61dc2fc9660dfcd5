/**
 * Waitlist auto-fill through real HTTP against real PostgreSQL, with the job runner on an injected
 * clock and a real SMTP server: a freed Slot is offered to the earliest matching entry in the
 * cancelling request, held, passed on when the offer expires or is withdrawn, and claimed through
 * the claim page, which books the entry itself (docs/scheduling.md, "Waitlist").
 */
import type { Appointment, Slot } from 'fhir/r4';
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { startSmtp, TestSmtp } from './helpers/smtp';
import { bookablePractitioner, bookBody, EXT, find, patientToken, practitionerToken, proposals } from './helpers/scheduling';
import { inTenant } from '../server/db/tenant-tx';
import { createJobs, Jobs, listJobs } from '../server/jobs';
import { RANGE_ENDED } from '../server/scheduling/waitlist';
import { formatInZone } from '../server/jobs/zoned-time';
import { CLAIM_REQUESTS_PER_10_MINUTES } from '../server/scheduling/claim';

let s: TestServer;
let smtp: TestSmtp;
let jobs: Jobs;
const clock = { t: new Date(), now() { return new Date(this.t); } };
const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

beforeAll(async () => {
  smtp = await startSmtp();
  s = await startTestServer({ SMTP_URL: smtp.url, MAIL_FROM: 'Practice <practice@example.org>' });
  await s.setSettings({ rateLimitPerMinute: 0, practicePhone: '+1-555-0100', bookingLeadTimeMinutes: 120 });
  jobs = createJobs({ config: s.config, db: s.db.app, tenants: s.tenants, clock }, { onlyTenants: [s.tenant], redisUrl: null, backoffMs: () => 60_000 });
});
afterAll(async () => {
  await jobs.close();
  await s.close();
  await smtp.close();
});

const ALL_WEEK = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
/** yyyy-mm-dd, `days` days from now (UTC). */
const dayIn = (days: number) => new Date(Date.now() + days * DAY).toISOString().slice(0, 10);
const mailsTo = (addr: string) => smtp.received.filter((m) => m.to.includes(addr));
const claimLink = (text: string) => /(https?:\/\/\S+\/waitlist\/[^/\s]+\/offers\/[A-Za-z0-9_-]{43})/.exec(text)?.[1];
const pathOf = (url: string) => new URL(url).pathname;

async function patient(name: string): Promise<string> {
  const email = `${name.toLowerCase()}.${Math.random().toString(36).slice(2, 8)}@patient.example`;
  const r = await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', name: [{ family: name }], telecom: [{ system: 'email', value: email }] });
  expect(r.status).toBe(201);
  return r.body.id;
}
async function emailOf(patientId: string): Promise<string> {
  return (await s.http.get(`${s.base}/Patient/${patientId}`)).body.telecom[0].value;
}

function entry(patientId: string, range: { start: string; end: string }, extra: Partial<Appointment> = {}): Appointment {
  return {
    resourceType: 'Appointment',
    status: 'waitlist',
    requestedPeriod: [range],
    participant: [{ actor: { reference: `Patient/${patientId}` }, status: 'needs-action' }],
    ...extra,
  } as Appointment;
}
const withPractitioner = (pid: string) => ({ actor: { reference: `Practitioner/${pid}` }, status: 'needs-action' as const });

/** A patient puts themselves on the waitlist (their own token). */
async function joinAsPatient(patientId: string, a: Appointment): Promise<string> {
  const client = await patientToken(s, patientId);
  const r = await client.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send(a);
  expect(r.status).toBe(201);
  return r.body.id;
}
async function joinAsStaff(a: Appointment): Promise<string> {
  const r = await s.http.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send(a);
  expect(r.status).toBe(201);
  return r.body.id;
}

/** Books, for `patientId`, the proposal of `practitionerId` starting at `startIso` ($find + $book, staff). */
async function bookAt(practitionerId: string, patientId: string, startIso: string): Promise<Appointment> {
  const day = startIso.slice(0, 10);
  const f = await find(s.http, s.base, { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z`, practitioner: `Practitioner/${practitionerId}`, 'patient-reference': `Patient/${patientId}` });
  expect(f.status).toBe(200);
  const p = proposals(f.bundle).find((x) => Date.parse(x.start!) === Date.parse(startIso));
  expect(p).toBeDefined();
  const r = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(p!));
  expect(r.status).toBe(201);
  return r.body.entry[0].resource;
}

interface OfferRow {
  id: string;
  entry_id: string;
  slot_id: string;
  patient_id: string;
  status: string;
  expires_at: Date;
  token_hash: string;
}
const offers = (where: string, bindings: unknown[]) =>
  inTenant(s.db.app, s.tenant, async (tx) => (await tx.raw(`SELECT * FROM waitlist_offers WHERE tenant_id = ? AND ${where} ORDER BY created_at`, [s.tenant, ...bindings])).rows as OfferRow[]);
const slotStatus = async (id: string) => ((await s.http.get(`${s.base}/Slot/${id}`)).body as Slot).status;
const read = async (id: string) => (await s.http.get(`${s.base}/Appointment/${id}`)).body as Appointment;
const slotIdOf = (a: Appointment) => a.slot![0].reference!.replace('Slot/', '');

describe('the cascade: cancellation -> first entry offered -> expired after an hour -> second entry offered -> claimed', () => {
  test('offer, hold, expiry, claim, with the job clock', async () => {
    const { practitionerId } = await bookablePractitioner(s, { timeZone: 'UTC', days: ALL_WEEK, start: '09:00:00', end: '17:00:00' });
    const day = dayIn(3);
    const at = `${day}T10:00:00.000Z`;
    const [x, a, b, c, other] = [await patient('Booked'), await patient('First'), await patient('Second'), await patient('Third'), await patient('Other')];
    const booked = await bookAt(practitionerId, x, at);
    const slotId = slotIdOf(booked);
    const range = { start: `${day}T08:00:00Z`, end: `${day}T18:00:00Z` };
    // three patients put themselves on the list, in this order
    const ea = await joinAsPatient(a, entry(a, range, { participant: [{ actor: { reference: `Patient/${a}` }, status: 'needs-action' }, withPractitioner(practitionerId)] }));
    const eb = await joinAsPatient(b, entry(b, range));
    const ec = await joinAsPatient(c, entry(c, range));
    expect(await offers('entry_id = ANY(?)', [[ea, eb, ec]])).toEqual([]);

    // the practitioner cancels: in that request the first entry gets an open offer and the Slot is held
    const doctor = await practitionerToken(s, practitionerId);
    const cancel = await doctor.post(`${s.base}/Appointment/${booked.id}/$cancel`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'Doctor ill' }] });
    expect(cancel.status).toBe(200);
    const [first] = await offers('slot_id = ?', [slotId]);
    expect(first).toMatchObject({ entry_id: ea, patient_id: a, status: 'open' });
    expect(Math.abs(new Date(first.expires_at).getTime() - Date.now() - 60 * MIN)).toBeLessThan(MIN);
    expect(first.token_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(await slotStatus(slotId)).toBe('busy-tentative');

    // held: $find hides it, a $book by someone else is a 409
    const f = await find(s.http, s.base, { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z`, practitioner: `Practitioner/${practitionerId}`, 'patient-reference': `Patient/${other}` });
    expect(proposals(f.bundle).map((p) => p.start)).not.toContain(at);
    const stolen = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody({ ...booked, id: undefined, status: 'proposed', participant: [{ actor: { reference: `Patient/${other}` } }, withPractitioner(practitionerId)] } as Appointment));
    expect(stolen.status).toBe(409);
    expect(JSON.stringify(stolen.body)).toContain("just taken");

    // the offer email, within a minute, with the claim link
    clock.t = new Date(Date.now() + MIN);
    await jobs.drain();
    const toA = mailsTo(await emailOf(a));
    expect(toA.map((m) => m.subject)).toEqual(['An appointment time has become available']);
    const linkA = claimLink(toA[0].text)!;
    expect(linkA).toContain(`/waitlist/${s.tenant}/offers/`);
    expect(toA[0].text).toContain(formatInZone(new Date(at), 'UTC'));
    // the job row keeps no copy of the link once the email is sent
    const emailJob = (await inTenant(s.db.app, s.tenant, (tx) => tx.raw(`SELECT payload::text AS p FROM jobs WHERE tenant_id = ? AND key = ?`, [s.tenant, `waitlist:offer:${first.id}:email`]))).rows[0];
    expect(emailJob.p).not.toContain('/offers/');

    // no claim within the hour: 61 minutes on, the expiry job passes the Slot to the second entry
    const t0 = clock.t;
    clock.t = new Date(t0.getTime() + 61 * MIN);
    await jobs.drain();
    const [o1, o2] = await offers('slot_id = ?', [slotId]);
    expect(o1).toMatchObject({ entry_id: ea, status: 'expired' });
    expect(o2).toMatchObject({ entry_id: eb, patient_id: b, status: 'open' });
    expect(await slotStatus(slotId)).toBe('busy-tentative');
    const toB = mailsTo(await emailOf(b));
    expect(toB.map((m) => m.subject)).toEqual(['An appointment time has become available']);
    const linkB = claimLink(toB[0].text)!;
    expect(linkB).not.toBe(linkA);
    expect(await read(ea)).toMatchObject({ status: 'waitlist' }); // still waiting for other times

    // the first link is dead
    expect((await s.anon.get(pathOf(linkA))).status).toBe(410);
    expect((await s.anon.post(pathOf(linkA))).status).toBe(410);

    // GET shows the offer and books nothing (mail scanners prefetch links)
    const show = await s.anon.get(pathOf(linkB));
    expect(show.status).toBe(200);
    expect(show.headers['content-type']).toMatch(/text\/html/);
    expect(show.headers['cache-control']).toBe('no-store');
    expect(show.text).toContain('Book this time');
    expect(show.text).toContain('(UTC)');
    expect(show.text).not.toContain('Booked'); // no other patient's data
    expect(await read(eb)).toMatchObject({ status: 'waitlist' });
    expect(await slotStatus(slotId)).toBe('busy-tentative');

    // POST claims: the entry itself is the booking (same id), the Slot is busy, the confirmation planned
    const claimed = await s.anon.post(pathOf(linkB));
    expect(claimed.status).toBe(200);
    expect(claimed.text).toContain('Your appointment is booked');
    const bookedB = await read(eb);
    expect(bookedB).toMatchObject({ status: 'booked', start: at, slot: [{ reference: `Slot/${slotId}` }] });
    expect(bookedB.participant!.map((p) => p.actor?.reference)).toEqual(expect.arrayContaining([`Patient/${b}`, `Practitioner/${practitionerId}`]));
    expect(await slotStatus(slotId)).toBe('busy');
    expect((await offers('slot_id = ?', [slotId])).map((o) => o.status)).toEqual(['expired', 'claimed']);
    const planned = await inTenant(s.db.app, s.tenant, (tx) => listJobs(tx, `appt:${eb}:confirmation:`));
    expect(planned).toHaveLength(1);
    expect((await inTenant(s.db.app, s.tenant, (tx) => listJobs(tx, `waitlist:offer:${o2.id}:expiry`)))[0].state).toBe('retracted');
    // the patient sees it as their own booking
    const mine = await (await patientToken(s, b)).get(`${s.base}/Appointment?status=booked`);
    expect(mine.body.entry.map((e: { resource: Appointment }) => e.resource.id)).toEqual([eb]);
    // the third entry was never offered; claiming again, or the expired link: 410
    expect(await offers('entry_id = ?', [ec])).toEqual([]);
    expect((await s.anon.post(pathOf(linkB))).status).toBe(410);
    expect((await s.anon.post(pathOf(linkA))).status).toBe(410);
    await jobs.drain();
    expect(mailsTo(await emailOf(b)).map((m) => m.subject)).toEqual(['An appointment time has become available', 'Your appointment is confirmed']);
    // the claim is in the audit trail, without the token
    await s.audit.flush();
    const r = await inTenant(s.db.owner, s.tenant, (tx) => tx.raw(`SELECT content::text AS c FROM resources WHERE tenant_id = ? AND res_type = 'AuditEvent' ORDER BY last_updated`, [s.tenant]));
    const events = r.rows.map((x: { c: string }) => JSON.parse(x.c));
    const audited = events.find((e: any) => e.outcomeDesc?.startsWith(`waitlist offer ${o2.id} claimed`));
    expect(audited).toBeDefined();
    expect(audited.agent[0].who.reference).toBe(`Patient/${b}`);
    expect(audited.entity.map((e: any) => e.what?.reference)).toEqual(expect.arrayContaining([`Patient/${b}`, `Appointment/${eb}`, `Slot/${slotId}`]));
    const token = linkB.split('/').pop()!;
    expect(JSON.stringify(events)).not.toContain(token);
    clock.t = t0;
  });
});

describe('claiming', () => {
  test('two POSTs of one link at the same moment: one booking, the other a 410', async () => {
    const { practitionerId } = await bookablePractitioner(s, { timeZone: 'UTC', days: ALL_WEEK });
    const day = dayIn(9);
    const [x, w] = [await patient('Race'), await patient('RaceWait')];
    const booked = await bookAt(practitionerId, x, `${day}T14:00:00.000Z`);
    const e = await joinAsPatient(w, entry(w, { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z` }, { participant: [{ actor: { reference: `Patient/${w}` }, status: 'needs-action' }, withPractitioner(practitionerId)] }));
    expect((await s.http.delete(`${s.base}/Appointment/${booked.id}`)).status).toBe(200); // a delete frees the Slot too
    clock.t = new Date(Date.now() + MIN);
    await jobs.drain();
    const link = claimLink(mailsTo(await emailOf(w))[0].text)!;
    const rs = await Promise.all([s.anon.post(pathOf(link)), s.anon.post(pathOf(link))]);
    expect(rs.map((r) => r.status).sort()).toEqual([200, 410]);
    expect(await read(e)).toMatchObject({ status: 'booked' });
    const n = await inTenant(s.db.app, s.tenant, async (tx) => (await tx.raw(`SELECT count(*)::int AS n FROM booked_slot WHERE tenant_id = ? AND slot_id = ?`, [s.tenant, slotIdOf(booked)])).rows[0].n);
    expect(n).toBe(1);
  });
});

describe('matching', () => {
  test('practitioner, type and range filters; priority, then queue order; a patient cannot jump the queue; withdrawal passes the Slot on', async () => {
    const { practitionerId: q } = await bookablePractitioner(s, {
      timeZone: 'UTC',
      days: ALL_WEEK,
      extra: {
        extension: [
          { url: EXT.timeZone, valueCode: 'UTC' },
          { url: EXT.appointmentType, extension: [{ url: 'type', valueCoding: { system: 'urn:test', code: 'checkup' } }, { url: 'minutes', valuePositiveInt: 60 }] },
        ],
      },
    });
    const { practitionerId: otherDoc } = await bookablePractitioner(s, { timeZone: 'UTC', days: ALL_WEEK });
    const day = dayIn(5);
    const at = `${day}T11:00:00.000Z`;
    const range = { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z` };
    const ps = [];
    for (let i = 0; i < 7; i++) ps.push(await patient(`M${i}`));
    const wrongDoc = await joinAsStaff(entry(ps[0], range, { participant: [{ actor: { reference: `Patient/${ps[0]}` }, status: 'needs-action' }, withPractitioner(otherDoc)], created: '2020-01-01T00:00:00Z' }));
    const wrongType = await joinAsStaff(entry(ps[1], range, { appointmentType: { coding: [{ system: 'urn:test', code: 'surgery' }] }, created: '2020-01-01T00:00:00Z' }));
    const wrongDay = await joinAsStaff(entry(ps[2], { start: `${dayIn(6)}T00:00:00Z`, end: `${dayIn(6)}T23:59:59Z` }, { created: '2020-01-01T00:00:00Z' }));
    const tooShort = await joinAsStaff(entry(ps[3], { start: `${day}T11:30:00Z`, end: `${day}T13:00:00Z` }, { created: '2020-01-01T00:00:00Z' }));
    const prio5 = await joinAsStaff(entry(ps[4], range, { priority: 5, appointmentType: { coding: [{ system: 'urn:test', code: 'checkup' }] } }));
    // a patient's own priority and created are ignored: they queue at the end, by the time they joined
    const cheater = await joinAsPatient(ps[5], entry(ps[5], range, { priority: 1, created: '2000-01-01T00:00:00Z' }));
    const prio2 = await joinAsStaff(entry(ps[6], range, { priority: 2 }));

    const booked = await bookAt(q, ps[0], at);
    const slotId = slotIdOf(booked);
    // a plain REST cancel (PATCH) frees the Slot too
    const patch = await s.http.patch(`${s.base}/Appointment/${booked.id}`).set('Content-Type', 'application/json-patch+json').send([{ op: 'replace', path: '/status', value: 'cancelled' }]);
    expect(patch.status).toBe(200);
    let open = await offers(`slot_id = ? AND status = 'open'`, [slotId]);
    expect(open.map((o) => o.entry_id)).toEqual([prio2]);

    // the patient holding the offer leaves the list: the offer is withdrawn and passes to the next
    const leave = await (await patientToken(s, ps[6])).patch(`${s.base}/Appointment/${prio2}`).set('Content-Type', 'application/json-patch+json').send([{ op: 'replace', path: '/status', value: 'cancelled' }]);
    expect(leave.status).toBe(200);
    expect((await offers('entry_id = ?', [prio2])).map((o) => o.status)).toEqual(['withdrawn']);
    open = await offers(`slot_id = ? AND status = 'open'`, [slotId]);
    expect(open.map((o) => o.entry_id)).toEqual([prio5]);
    // the withdrawn offer's email and expiry jobs are retracted (the email was not sent yet)
    const withdrawn = (await offers('entry_id = ?', [prio2]))[0];
    expect((await inTenant(s.db.app, s.tenant, (tx) => listJobs(tx, `waitlist:offer:${withdrawn.id}:`))).map((j) => j.state)).toEqual(['retracted', 'retracted']);
    const payload = (await inTenant(s.db.app, s.tenant, (tx) => tx.raw(`SELECT payload::text AS p FROM jobs WHERE tenant_id = ? AND key = ?`, [s.tenant, `waitlist:offer:${withdrawn.id}:email`]))).rows[0].p;
    expect(payload).not.toContain('/offers/'); // the link is not kept once the offer has ended

    // staff cancel the next one: then the patient who joined last, despite the priority they sent
    expect((await s.http.post(`${s.base}/Appointment/${prio5}/$cancel`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'found another time' }] })).status).toBe(200);
    open = await offers(`slot_id = ? AND status = 'open'`, [slotId]);
    expect(open.map((o) => o.entry_id)).toEqual([cheater]);
    await (await patientToken(s, ps[5])).patch(`${s.base}/Appointment/${cheater}`).set('Content-Type', 'application/json-patch+json').send([{ op: 'replace', path: '/status', value: 'cancelled' }]);
    // nobody else matches: the Slot is free again and $find shows it
    expect(await offers(`slot_id = ? AND status = 'open'`, [slotId])).toEqual([]);
    expect(await slotStatus(slotId)).toBe('free');
    const f = await find(s.http, s.base, { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z`, practitioner: `Practitioner/${q}` });
    expect(proposals(f.bundle).map((p) => Date.parse(p.start!))).toContain(Date.parse(at));
    for (const e of [wrongDoc, wrongType, wrongDay, tooShort]) expect(await offers('entry_id = ?', [e])).toEqual([]);
  });

  test('two Slots freed at the same moment: the one entry gets one offer, the other Slot stays free', async () => {
    const { practitionerId } = await bookablePractitioner(s, { timeZone: 'UTC', days: ALL_WEEK });
    const day = dayIn(8);
    const [p1, p2, w] = [await patient('Two1'), await patient('Two2'), await patient('TwoWait')];
    const a1 = await bookAt(practitionerId, p1, `${day}T10:00:00.000Z`);
    const a2 = await bookAt(practitionerId, p2, `${day}T11:00:00.000Z`);
    const e = await joinAsPatient(w, entry(w, { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z` }, { participant: [{ actor: { reference: `Patient/${w}` }, status: 'needs-action' }, withPractitioner(practitionerId)] }));
    const cancel = (id: string) => s.http.post(`${s.base}/Appointment/${id}/$cancel`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'x' }] });
    const rs = await Promise.all([cancel(a1.id!), cancel(a2.id!)]);
    expect(rs.map((r) => r.status)).toEqual([200, 200]);
    const open = await offers(`entry_id = ? AND status = 'open'`, [e]);
    expect(open).toHaveLength(1);
    const statuses = [await slotStatus(slotIdOf(a1)), await slotStatus(slotIdOf(a2))].sort();
    expect(statuses).toEqual(['busy-tentative', 'free']);
  });

  test('lead time: a freed Slot sooner than the lead time is offered to nobody', async () => {
    const { practitionerId } = await bookablePractitioner(s, { timeZone: 'UTC', days: ALL_WEEK, allDay: true });
    const p = await patient('Soon');
    const waiting = await patient('Waiting');
    const soon = await inTenant(s.db.app, s.tenant, async (tx) =>
      (await tx.raw(`SELECT slot_id, start_at, end_at FROM sched_slot WHERE tenant_id = ? AND practitioner = ? AND start_at > now() + interval '5 minutes' ORDER BY start_at LIMIT 1`, [s.tenant, `Practitioner/${practitionerId}`])).rows[0],
    );
    const e = await joinAsStaff(entry(waiting, { start: new Date(Date.now() - HOUR).toISOString(), end: new Date(Date.now() + 5 * HOUR).toISOString() }, { participant: [{ actor: { reference: `Patient/${waiting}` }, status: 'needs-action' }, withPractitioner(practitionerId)] }));
    // the front desk books same-day by plain POST, then cancels
    const r = await s.http.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send({
      resourceType: 'Appointment',
      status: 'booked',
      start: new Date(soon.start_at).toISOString(),
      end: new Date(soon.end_at).toISOString(),
      slot: [{ reference: `Slot/${soon.slot_id}` }],
      participant: [{ actor: { reference: `Patient/${p}` }, status: 'accepted' }, { actor: { reference: `Practitioner/${practitionerId}` }, status: 'accepted' }],
    });
    expect(r.status).toBe(201);
    expect((await s.http.post(`${s.base}/Appointment/${r.body.id}/$cancel`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'x' }] })).status).toBe(200);
    expect(await offers('entry_id = ?', [e])).toEqual([]);
    expect(await slotStatus(soon.slot_id)).toBe('free');
    // the same entry is offered a Slot beyond the lead time
    const later = await inTenant(s.db.app, s.tenant, async (tx) =>
      (await tx.raw(`SELECT slot_id, start_at FROM sched_slot WHERE tenant_id = ? AND practitioner = ? AND start_at > now() + interval '125 minutes' ORDER BY start_at LIMIT 1`, [s.tenant, `Practitioner/${practitionerId}`])).rows[0],
    );
    const b = await bookAt(practitionerId, p, new Date(later.start_at).toISOString());
    expect((await s.http.post(`${s.base}/Appointment/${b.id}/$cancel`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'x' }] })).status).toBe(200);
    expect((await offers('entry_id = ?', [e])).map((o) => [o.slot_id, o.status])).toEqual([[later.slot_id, 'open']]);
  });
});

describe('entries', () => {
  test('validation: requestedPeriod and the patient are required (422); an entry holds no time or Slot', async () => {
    const { practitionerId } = await bookablePractitioner(s, { timeZone: 'UTC', days: ALL_WEEK });
    const p = await patient('Valid');
    const noRange = await s.http.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Appointment', status: 'waitlist', participant: [{ actor: { reference: `Patient/${p}` }, status: 'needs-action' }] });
    expect(noRange.status).toBe(422);
    expect(JSON.stringify(noRange.body)).toContain('requestedPeriod');
    const noPatient = await s.http.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Appointment', status: 'waitlist', requestedPeriod: [{ start: '2030-01-01T00:00:00Z', end: '2030-01-02T00:00:00Z' }], participant: [withPractitioner(practitionerId)] });
    expect(noPatient.status).toBe(422);
    const openEnded = await s.http.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send(entry(p, { start: '2030-01-01T00:00:00Z' } as never));
    expect(openEnded.status).toBe(422);
    // a waitlist entry naming a Slot and a time does not take them
    const day = dayIn(7);
    const f = await find(s.http, s.base, { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z`, practitioner: `Practitioner/${practitionerId}` });
    const prop = proposals(f.bundle)[0];
    const e = await s.http.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send({ ...entry(p, { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z` }), start: prop.start, end: prop.end, slot: prop.slot });
    expect(e.status).toBe(201);
    expect(await slotStatus(slotIdOf(prop))).toBe('free');
    const other = await patient('Other');
    const f2 = await find(s.http, s.base, { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z`, practitioner: `Practitioner/${practitionerId}`, 'patient-reference': `Patient/${other}` });
    expect(proposals(f2.bundle).map((x) => x.start)).toContain(prop.start);
    // a patient cannot put someone else on the list
    const foreign = await (await patientToken(s, other)).post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send(entry(p, { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z` }));
    expect([403, 404, 422]).toContain(foreign.status);
    // nor add someone else beside themselves (the offer and the booking would go to them)
    const both = await (await patientToken(s, other)).post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send({
      ...entry(p, { start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z` }),
      participant: [{ actor: { reference: `Patient/${p}` }, status: 'needs-action' }, { actor: { reference: `Patient/${other}` }, status: 'needs-action' }],
    });
    expect(both.status).toBe(403);
  });

  test('no 500 for a bad, unknown or malformed claim link', async () => {
    const unknown = 'A'.repeat(43);
    for (const path of [`/waitlist/${s.tenant}/offers/${unknown}`, `/waitlist/${s.tenant}/offers/short`, `/waitlist/no-such-tenant/offers/${unknown}`, `/waitlist/${s.tenant}/offers/%E0%A4%A`]) {
      const g = await s.anon.get(path);
      expect(path.includes('%') ? [400, 404] : [404]).toContain(g.status);
      const p = await s.anon.post(path).type('form').send('x=%%%');
      expect([400, 404]).toContain(p.status);
    }
  });

  test('claim links are rate-limited per practice and IP; an unknown token is a security event', async () => {
    const tenant = await s.newTenant();
    const path = `/waitlist/${tenant}/offers/${'B'.repeat(43)}`;
    const statuses: number[] = [];
    for (let i = 0; i < CLAIM_REQUESTS_PER_10_MINUTES + 1; i++) statuses.push((await s.anon.get(path)).status);
    expect(statuses.slice(0, -1).every((x) => x === 404)).toBe(true);
    const last = await s.anon.get(path);
    expect(last.status).toBe(429);
    expect(last.headers['retry-after']).toBeDefined();
    await s.audit.flush();
    const r = await inTenant(s.db.owner, tenant, (tx) => tx.raw(`SELECT count(*)::int AS n FROM resources WHERE tenant_id = ? AND res_type = 'AuditEvent' AND content::text LIKE '%unknown token%'`, [tenant]));
    expect(r.rows[0].n).toBeGreaterThanOrEqual(1);
  });

  test('an entry whose range has ended is cancelled by its range-end job ("Waitlist range ended") and never matched', async () => {
    const p = await patient('Late');
    const end = new Date(Date.now() + 30 * MIN);
    const e = await joinAsPatient(p, entry(p, { start: new Date(Date.now() - HOUR).toISOString(), end: end.toISOString() }));
    const job = await inTenant(s.db.app, s.tenant, (tx) => listJobs(tx, `waitlist:entry:${e}:end:`));
    expect(job.map((j) => [j.state, j.runAt.getTime()])).toEqual([['pending', end.getTime()]]);
    // the patient extends the range: the job is replaced
    const later = new Date(Date.now() + 90 * MIN);
    const client = await patientToken(s, p);
    const current = await read(e);
    expect((await client.put(`${s.base}/Appointment/${e}`).set('Content-Type', FHIR_JSON).send({ ...current, requestedPeriod: [{ start: current.requestedPeriod![0].start, end: later.toISOString() }] })).status).toBe(200);
    const jobs2 = await inTenant(s.db.app, s.tenant, (tx) => listJobs(tx, `waitlist:entry:${e}:end:`));
    expect(jobs2.map((j) => j.state).sort()).toEqual(['pending', 'retracted']);
    const t0 = clock.t;
    clock.t = new Date(later.getTime() + MIN);
    await jobs.drain();
    clock.t = t0;
    const done = await read(e);
    expect(done.status).toBe('cancelled');
    expect(done.cancelationReason?.text).toBe(RANGE_ENDED);
    const rows = await inTenant(s.db.app, s.tenant, async (tx) => (await tx.raw(`SELECT count(*)::int AS n FROM waitlist_entry WHERE tenant_id = ? AND entry_id = ?`, [s.tenant, e])).rows[0].n);
    expect(rows).toBe(0);
  });
});
