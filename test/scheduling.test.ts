/**
 * Scheduling through real HTTP against real PostgreSQL: hours -> Slots, $find, $book under
 * concurrency (also raw POST/PUT and transaction Bundles), cancel and reschedule rules, the
 * practitioner's calendar, and the domain events (docs/scheduling.md).
 */
import type { Appointment, Bundle, PractitionerRole, Slot } from 'fhir/r4';
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import {
  bookablePractitioner, bookBody, createPatient, EXT, find, nextWeekday, patientToken, practitionerToken, proposals, role,
} from './helpers/scheduling';
import { onSchedulingEvent, SchedulingEvent } from '../server/scheduling/events';
import { inTenant } from '../server/db/tenant-tx';
import { listJobs } from '../server/jobs/outbox';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
  await s.setSettings({ rateLimitPerMinute: 0, practicePhone: '+1-555-0100' });
});
afterAll(() => s.close());

const dayRange = (day: string) => ({ start: `${day}T00:00:00Z`, end: `${day}T23:59:59Z` });

async function dbCount(sql: string, bindings: unknown[]): Promise<number> {
  return inTenant(s.db.app, s.tenant, async (tx) => Number((await tx.raw(sql, bindings)).rows[0].n));
}

describe('hours -> Slots', () => {
  test('a PractitionerRole with weekly hours gets a Schedule and free Slots for the horizon (90 days), only inside the hours', async () => {
    const { practitionerId, roleId } = await bookablePractitioner(s, { timeZone: 'America/New_York' });
    const sched = await s.http.get(`${s.base}/Schedule?actor=PractitionerRole/${roleId}`);
    expect(sched.body.total).toBe(1);
    const scheduleId = sched.body.entry[0].resource.id;
    expect(sched.body.entry[0].resource.actor.map((a: { reference: string }) => a.reference)).toEqual([`PractitionerRole/${roleId}`, `Practitioner/${practitionerId}`]);
    const slots = await s.http.get(`${s.base}/Slot?schedule=Schedule/${scheduleId}&_count=1000`);
    // 90 days: about 64 weekdays x 8 hourly slots
    expect(slots.body.total).toBeGreaterThanOrEqual(61 * 8);
    expect(slots.body.total).toBeLessThanOrEqual(66 * 8);
    const local = (iso: string) => new Intl.DateTimeFormat('en-US', { timeZone: 'America/New_York', hour: '2-digit', minute: '2-digit', weekday: 'short', hourCycle: 'h23' }).format(new Date(iso));
    for (const e of slots.body.entry as Array<{ resource: Slot }>) {
      const l = local(e.resource.start);
      expect(l).toMatch(/^(Mon|Tue|Wed|Thu|Fri) (09|1[0-6]):00$/);
      expect(Date.parse(e.resource.end) - Date.parse(e.resource.start)).toBe(3600_000);
      expect(e.resource.status).toBe('free');
    }
  });

  test('$regenerate-slots (instance and type level) is idempotent; a deleted role takes its free Slots with it', async () => {
    const { roleId } = await bookablePractitioner(s, { timeZone: 'Europe/Berlin' });
    const one = await s.http.post(`${s.base}/PractitionerRole/${roleId}/$regenerate-slots`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters' });
    expect(one.status).toBe(200);
    const n = (r: { body: { parameter: Array<{ name: string; valueInteger: number }> } }, k: string) => r.body.parameter.find((p) => p.name === k)!.valueInteger;
    expect(n(one, 'created')).toBe(0);
    expect(n(one, 'removed')).toBe(0);
    const all = await s.http.post(`${s.base}/PractitionerRole/$regenerate-slots`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters' });
    expect(all.status).toBe(200);
    expect(n(all, 'schedules')).toBeGreaterThanOrEqual(1);
    const patient = await patientToken(s, 'nobody');
    expect((await patient.post(`${s.base}/PractitionerRole/${roleId}/$regenerate-slots`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters' })).status).toBe(403);
    const scheduleId = (await s.http.get(`${s.base}/Schedule?actor=PractitionerRole/${roleId}`)).body.entry[0].resource.id;
    expect((await s.http.delete(`${s.base}/PractitionerRole/${roleId}`)).status).toBe(200);
    const left = await s.http.get(`${s.base}/Slot?schedule=Schedule/${scheduleId}&_summary=count`);
    expect(left.body.total).toBe(0);
  });

  test('an invalid time zone or hours are a 422 OperationOutcome', async () => {
    const p = await s.http.post(`${s.base}/Practitioner`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Practitioner' });
    const bad = role(p.body.id, { timeZone: 'Mars/Olympus' });
    const r = await s.http.post(`${s.base}/PractitionerRole`).set('Content-Type', FHIR_JSON).send(bad);
    expect(r.status).toBe(422);
    expect(r.body.issue[0].diagnostics).toMatch(/IANA time zone/);
    const r2 = await s.http.post(`${s.base}/PractitionerRole`).set('Content-Type', FHIR_JSON).send(role(p.body.id, { start: '17:00:00', end: '09:00:00' }));
    expect(r2.status).toBe(422);
  });

  test('appointment types with durations and buffers: a 30-minute grid, a 60-minute type takes two slots', async () => {
    const { practitionerId } = await bookablePractitioner(s, {
      extra: {
        extension: [
          { url: EXT.timeZone, valueCode: 'Europe/Berlin' },
          { url: EXT.appointmentType, extension: [{ url: 'type', valueCoding: { system: 'urn:test', code: 'short', display: 'Short' } }, { url: 'minutes', valuePositiveInt: 20 }, { url: 'buffer', valueUnsignedInt: 10 }] },
          { url: EXT.appointmentType, extension: [{ url: 'type', valueCoding: { system: 'urn:test', code: 'long' } }, { url: 'minutes', valuePositiveInt: 60 }] },
        ],
      },
    });
    const day = nextWeekday(2, 3);
    const short = await find(s.http, s.base, { ...dayRange(day), practitioner: `Practitioner/${practitionerId}`, 'visit-type': 'urn:test|short' });
    expect(short.status).toBe(200);
    expect(short.bundle.total).toBe(16); // 09:00..16:30 every 30 minutes
    const a = proposals(short.bundle)[0];
    expect(a.minutesDuration).toBe(20);
    expect(a.slot).toHaveLength(1);
    expect(Date.parse(a.end!) - Date.parse(a.start!)).toBe(20 * 60_000);
    const long = await find(s.http, s.base, { ...dayRange(day), practitioner: `Practitioner/${practitionerId}`, 'visit-type': 'long' });
    expect(long.bundle.total).toBe(15); // the last start is 16:00 local
    expect(proposals(long.bundle)[0].slot).toHaveLength(2);
  });
});

describe('$find', () => {
  let practitionerId: string;
  let roleId: string;
  let roleRes: PractitionerRole;
  let patientId: string;
  const day = nextWeekday(3, 3); // a Wednesday at least 3 days ahead
  beforeAll(async () => {
    ({ practitionerId, roleId, role: roleRes } = await bookablePractitioner(s, { timeZone: 'Europe/Berlin' }));
    patientId = await createPatient(s);
  });
  const q = () => ({ ...dayRange(day), practitioner: `Practitioner/${practitionerId}` });

  test('proposes Appointments from free Slots, IHE searchset shape, _count honoured with total', async () => {
    const r = await find(s.http, s.base, { ...q(), 'patient-reference': `Patient/${patientId}` });
    expect(r.status).toBe(200);
    expect(r.bundle.type).toBe('searchset');
    expect(r.bundle.total).toBe(8);
    const a = proposals(r.bundle)[0];
    expect(a.status).toBe('proposed');
    expect(a.participant.map((p) => p.actor?.reference)).toEqual(expect.arrayContaining([`Practitioner/${practitionerId}`, `Patient/${patientId}`]));
    expect(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit' }).format(new Date(a.start!))).toBe('09:00');
    const limited = await s.http.get(`${s.base}/Appointment/$find?start=${day}&end=${day}T23:59:59Z&practitioner=Practitioner/${practitionerId}&_count=3`);
    expect(limited.status).toBe(200);
    expect(limited.body.total).toBe(8);
    expect(limited.body.entry).toHaveLength(3);
  });

  test('excludes booked slots', async () => {
    const first = proposals((await find(s.http, s.base, q())).bundle)[0];
    const b = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(first, [{ name: 'patient-reference', valueReference: { reference: `Patient/${patientId}` } }]));
    expect(b.status).toBe(201);
    const after = await find(s.http, s.base, q());
    expect(after.bundle.total).toBe(7);
    expect(proposals(after.bundle).map((a) => a.start)).not.toContain(first.start);
  });

  test('excludes blocked time (one-off and recurring), which never touches an existing appointment', async () => {
    const before = proposals((await find(s.http, s.base, q())).bundle);
    const booked = (await s.http.get(`${s.base}/Appointment?practitioner=Practitioner/${practitionerId}&status=booked`)).body.entry[0].resource as Appointment;
    const blockStart = booked.start!; // the block covers the booked hour and the next one
    const blockEnd = new Date(Date.parse(booked.start!) + 2 * 3600_000).toISOString();
    const updated: PractitionerRole = {
      ...roleRes,
      id: roleId,
      notAvailable: [{ description: 'Conference', during: { start: blockStart, end: blockEnd } }],
      extension: [...roleRes.extension!, { url: EXT.recurringBlock, extension: [{ url: 'day', valueCode: 'wed' }, { url: 'start', valueTime: '12:00:00' }, { url: 'end', valueTime: '13:00:00' }] }],
    };
    const put = await s.http.put(`${s.base}/PractitionerRole/${roleId}`).set('Content-Type', FHIR_JSON).send(updated);
    expect(put.status).toBe(200);
    const after = proposals((await find(s.http, s.base, q())).bundle);
    expect(after.length).toBe(before.length - 2); // the hour after the booking and the lunch hour
    const berlin = (iso: string) => new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit' }).format(new Date(iso));
    expect(after.map((a) => berlin(a.start!))).not.toContain('12:00');
    // the booked appointment and its Slot are untouched
    const again = await s.http.get(`${s.base}/Appointment/${booked.id}`);
    expect(again.body.status).toBe('booked');
    expect(again.body.meta.versionId).toBe('1');
    const slot = await s.http.get(`${s.base}/${booked.slot![0].reference}`);
    expect(slot.body.status).toBe('busy');
    // the blocked free slot is busy-unavailable
    const scheduleId = (await s.http.get(`${s.base}/Schedule?actor=PractitionerRole/${roleId}`)).body.entry[0].resource.id;
    const blocked = await s.http.get(`${s.base}/Slot?schedule=Schedule/${scheduleId}&status=busy-unavailable&_count=100`);
    expect(blocked.body.total).toBeGreaterThanOrEqual(2);
    roleRes = put.body;
    // cancelling the appointment under the block does not offer its slot: it is busy-unavailable now
    const c = await s.http.post(`${s.base}/Appointment/${booked.id}/$cancel`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'conference' }] });
    expect(c.status).toBe(200);
    expect((await s.http.get(`${s.base}/${booked.slot![0].reference}`)).body.status).toBe('busy-unavailable');
    expect(proposals((await find(s.http, s.base, q())).bundle).map((a) => a.start)).not.toContain(booked.start);
  });

  test('excludes out-of-hours slots: shorter hours remove the free Slots outside them', async () => {
    const shorter = { ...roleRes, availableTime: [{ daysOfWeek: ['mon', 'tue', 'wed', 'thu', 'fri'] as never, availableStartTime: '09:00:00', availableEndTime: '12:00:00' }] };
    const put = await s.http.put(`${s.base}/PractitionerRole/${roleId}`).set('Content-Type', FHIR_JSON).send(shorter);
    expect(put.status).toBe(200);
    const berlin = (iso: string) => Number(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', hourCycle: 'h23' }).format(new Date(iso)));
    const after = proposals((await find(s.http, s.base, q())).bundle);
    expect(after.length).toBeGreaterThan(0);
    for (const a of after) expect(berlin(a.start!)).toBeLessThan(12);
    // a free Slot written by hand outside the hours is not offered either
    const schedule = (await s.http.get(`${s.base}/Schedule?actor=PractitionerRole/${roleId}`)).body.entry[0].resource.id;
    const evening = new Date(Date.parse(after[0].start!) + 10 * 3600_000);
    const hand = await s.http.post(`${s.base}/Slot`).set('Content-Type', FHIR_JSON).send({
      resourceType: 'Slot', schedule: { reference: `Schedule/${schedule}` }, status: 'free', start: evening.toISOString(), end: new Date(evening.getTime() + 3600_000).toISOString(),
    });
    expect(hand.status).toBe(201);
    const again = proposals((await find(s.http, s.base, q())).bundle);
    expect(again.map((a) => a.start)).not.toContain(evening.toISOString());
    roleRes = put.body;
  });

  test('excludes slots sooner than the lead time; $book of a too-soon slot gets the message with the practice phone', async () => {
    const other = await bookablePractitioner(s, { timeZone: 'UTC', days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], allDay: true });
    const now = Date.now();
    const r = await find(s.http, s.base, { start: new Date(now).toISOString(), end: new Date(now + 6 * 3600_000).toISOString(), practitioner: `Practitioner/${other.practitionerId}` });
    expect(r.status).toBe(200);
    const starts = proposals(r.bundle).map((a) => Date.parse(a.start!));
    expect(starts.length).toBeGreaterThanOrEqual(3);
    for (const t of starts) expect(t).toBeGreaterThanOrEqual(now + 2 * 3600_000 - 1000);
    // a slot within the lead time, booked anyway
    const soonId = await inTenant(s.db.app, s.tenant, async (tx) =>
      (await tx.raw(`SELECT slot_id FROM sched_slot WHERE tenant_id = ? AND practitioner = ? AND start_at > now() ORDER BY start_at LIMIT 1`, [s.tenant, `Practitioner/${other.practitionerId}`])).rows[0].slot_id as string);
    const soonSlot = (await s.http.get(`${s.base}/Slot/${soonId}`)).body as Slot;
    const proposal: Appointment = { resourceType: 'Appointment', status: 'proposed', start: soonSlot.start, end: soonSlot.end, slot: [{ reference: `Slot/${soonSlot.id}` }], participant: [{ actor: { reference: `Practitioner/${other.practitionerId}` }, status: 'accepted' }] };
    const patient = await patientToken(s, patientId);
    const b = await patient.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(proposal));
    expect(b.status).toBe(422);
    expect(b.body.resourceType).toBe('OperationOutcome');
    expect(b.body.issue[0].diagnostics).toBe('Appointments must be booked at least 2 hours in advance. Please call +1-555-0100 for same-day appointments.');
    // the same rule for a patient's plain POST
    const raw = await patient.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send({ ...proposal, status: 'booked', participant: [...proposal.participant, { actor: { reference: `Patient/${patientId}` }, status: 'accepted' }] });
    expect(raw.status).toBe(422);
    expect(raw.body.issue[0].diagnostics).toMatch(/at least 2 hours in advance/);
  });

  test('a patient finds for themselves; bad input is a 400 OperationOutcome', async () => {
    const patient = await patientToken(s, patientId);
    const r = await find(patient, s.base, q());
    expect(r.status).toBe(200);
    for (const a of proposals(r.bundle)) expect(a.participant.map((p) => p.actor?.reference)).toContain(`Patient/${patientId}`);
    const noStart = await s.http.get(`${s.base}/Appointment/$find?end=${day}`);
    expect(noStart.status).toBe(400);
    expect(noStart.body.resourceType).toBe('OperationOutcome');
    expect((await s.http.get(`${s.base}/Appointment/$find?start=tomorrow&end=${day}`)).status).toBe(400);
    expect((await s.http.get(`${s.base}/Appointment/$find?start=${day}T10:00:00Z&end=${day}T09:00:00Z`)).status).toBe(400);
    expect((await s.http.get(`${s.base}/Appointment/$find?start=${day}&end=${day}T23:00:00Z&practitioner=Patient/1`)).status).toBe(400);
    expect((await s.http.get(`${s.base}/Appointment/$book`)).status).toBe(405);
  });

  test('the operations are in the CapabilityStatement, derived from the modules', async () => {
    const cs = await s.http.get(`${s.base}/metadata`);
    const ops = (t: string) => cs.body.rest[0].resource.find((r: { type: string }) => r.type === t).operation.map((o: { name: string }) => o.name);
    expect(ops('Appointment')).toEqual(expect.arrayContaining(['validate', 'restore', 'find', 'book', 'cancel', 'reschedule']));
    expect(ops('PractitionerRole')).toContain('regenerate-slots');
    expect(ops('Patient')).not.toContain('book');
  });
});

describe('no double booking, under any concurrency and on every path', () => {
  let practitionerId: string;
  let patientId: string;
  const day = nextWeekday(4, 3);
  beforeAll(async () => {
    ({ practitionerId } = await bookablePractitioner(s, { timeZone: 'America/New_York' }));
    patientId = await createPatient(s);
  });
  const slotAt = async (i = 0) => proposals((await find(s.http, s.base, { ...dayRange(day), practitioner: `Practitioner/${practitionerId}` })).bundle)[i];
  const appointmentsOn = (slotId: string) =>
    dbCount(`SELECT count(*) AS n FROM resources r JOIN idx_reference x ON x.tenant_id = r.tenant_id AND x.res_type = r.res_type AND x.res_id = r.id
              WHERE r.tenant_id = ? AND r.res_type = 'Appointment' AND r.deleted = false AND x.param = 'slot' AND x.target_id = ?`, [s.tenant, slotId]);

  function expectOneWinner(statuses: number[], bodies: Array<{ issue?: Array<{ diagnostics?: string }> }>) {
    const ok = statuses.filter((x) => x >= 200 && x < 300);
    expect(ok).toHaveLength(1);
    expect(statuses.filter((x) => x === 409)).toHaveLength(statuses.length - 1);
    for (const [i, st] of statuses.entries()) {
      if (st === 409) expect(bodies[i].issue![0].diagnostics).toMatch(/This slot was just taken/);
    }
  }

  test('50 concurrent $book calls on one slot: exactly one 201, 49 x 409, one Appointment in the database', async () => {
    const a = await slotAt();
    const res = await Promise.all(
      Array.from({ length: 50 }, () =>
        s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, [{ name: 'patient-reference', valueReference: { reference: `Patient/${patientId}` } }])),
      ),
    );
    expectOneWinner(res.map((r) => r.status), res.map((r) => r.body));
    const slotId = a.slot![0].reference!.split('/')[1];
    expect(await appointmentsOn(slotId)).toBe(1);
    expect((await s.http.get(`${s.base}/Slot/${slotId}`)).body.status).toBe('busy');
  });

  test('50 concurrent raw POST /Appointment on one slot: one 201, 49 x 409', async () => {
    const a = await slotAt();
    const appt = { ...a, status: 'booked', participant: [...a.participant, { actor: { reference: `Patient/${patientId}` }, status: 'accepted' }] };
    const res = await Promise.all(Array.from({ length: 50 }, () => s.http.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send(appt)));
    expectOneWinner(res.map((r) => r.status), res.map((r) => r.body));
    expect(await appointmentsOn(a.slot![0].reference!.split('/')[1])).toBe(1);
  });

  test('50 concurrent PUT /Appointment/{new id} on one slot: one 201, 49 x 409', async () => {
    const a = await slotAt();
    const res = await Promise.all(
      Array.from({ length: 50 }, (_, i) => {
        const id = `put-race-${i}`;
        const appt = { ...a, id, status: 'booked', participant: [...a.participant, { actor: { reference: `Patient/${patientId}` }, status: 'accepted' }] };
        return s.http.put(`${s.base}/Appointment/${id}`).set('Content-Type', FHIR_JSON).send(appt);
      }),
    );
    expectOneWinner(res.map((r) => r.status), res.map((r) => r.body));
    expect(await appointmentsOn(a.slot![0].reference!.split('/')[1])).toBe(1);
  });

  test('an Appointment without a Slot reference over a booked time of the practitioner is refused too (409)', async () => {
    const a = await slotAt();
    const booked = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, [{ name: 'patient-reference', valueReference: { reference: `Patient/${patientId}` } }]));
    expect(booked.status).toBe(201);
    const { slot: _slot, ...noSlot } = a;
    void _slot;
    const r = await s.http.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send({ ...noSlot, status: 'booked', start: new Date(Date.parse(a.start!) + 15 * 60_000).toISOString() });
    expect(r.status).toBe(409);
    expect(r.body.issue[0].diagnostics).toMatch(/This slot was just taken/);
  });

  test('transaction Bundles: two entries on one slot -> 409 and nothing written; a batch entry fails alone', async () => {
    const a = await slotAt();
    const appt = { ...a, status: 'booked', participant: [...a.participant, { actor: { reference: `Patient/${patientId}` }, status: 'accepted' }] };
    const tx: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: { resourceType: 'Patient', name: [{ family: 'TxBooker' }] }, request: { method: 'POST', url: 'Patient' } },
        { resource: appt as Appointment, request: { method: 'POST', url: 'Appointment' } },
        { resource: appt as Appointment, request: { method: 'POST', url: 'Appointment' } },
      ],
    };
    const r = await s.http.post(s.base).set('Content-Type', FHIR_JSON).send(tx);
    expect(r.status).toBe(409);
    expect(r.body.issue[0].diagnostics).toMatch(/This slot was just taken/);
    expect((await s.http.get(`${s.base}/Patient?family=TxBooker`)).body.total).toBe(0);
    const slotId = a.slot![0].reference!.split('/')[1];
    expect(await appointmentsOn(slotId)).toBe(0);
    const batch = await s.http.post(s.base).set('Content-Type', FHIR_JSON).send({ ...tx, type: 'batch' });
    expect(batch.status).toBe(200);
    expect(batch.body.entry.map((e: { response: { status: string } }) => e.response.status.slice(0, 3))).toEqual(['201', '201', '409']);
    expect(await appointmentsOn(slotId)).toBe(1);
  });

  test('one transaction creating a Schedule, its Slot and an Appointment on it (Appointment entry first) books the Slot', async () => {
    const start = new Date(Date.now() + 10 * 86_400_000);
    start.setUTCHours(7, 0, 0, 0);
    const end = new Date(start.getTime() + 3600_000);
    const tx: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'POST', url: 'Appointment' }, resource: { resourceType: 'Appointment', status: 'booked', start: start.toISOString(), end: end.toISOString(), slot: [{ reference: 'urn:uuid:6b1f0c1e-0000-4000-8000-000000000002' }], participant: [{ actor: { reference: `Patient/${patientId}` }, status: 'accepted' }, { actor: { reference: `Practitioner/${practitionerId}` }, status: 'accepted' }] } },
        { fullUrl: 'urn:uuid:6b1f0c1e-0000-4000-8000-000000000001', request: { method: 'POST', url: 'Schedule' }, resource: { resourceType: 'Schedule', actor: [{ reference: `Practitioner/${practitionerId}` }] } },
        { fullUrl: 'urn:uuid:6b1f0c1e-0000-4000-8000-000000000002', request: { method: 'POST', url: 'Slot' }, resource: { resourceType: 'Slot', schedule: { reference: 'urn:uuid:6b1f0c1e-0000-4000-8000-000000000001' }, status: 'free', start: start.toISOString(), end: end.toISOString() } },
      ],
    };
    const r = await s.http.post(s.base).set('Content-Type', FHIR_JSON).send(tx);
    expect(r.status).toBe(200);
    const slotId = r.body.entry[2].response.location.split('/')[1];
    expect((await s.http.get(`${s.base}/Slot/${slotId}`)).body.status).toBe('busy');
    expect(await appointmentsOn(slotId)).toBe(1);
  });

  test('a Slot that is booked cannot be deleted; a blocked (busy-unavailable) Slot cannot be booked', async () => {
    const a = await slotAt();
    const bookedSlot = (await s.http.get(`${s.base}/Appointment?practitioner=Practitioner/${practitionerId}&status=booked&_count=1`)).body.entry[0].resource.slot[0].reference;
    const del = await s.http.delete(`${s.base}/${bookedSlot}`);
    expect(del.status).toBe(409);
    const slotId = a.slot![0].reference!.split('/')[1];
    const slot = (await s.http.get(`${s.base}/Slot/${slotId}`)).body;
    expect((await s.http.put(`${s.base}/Slot/${slotId}`).set('Content-Type', FHIR_JSON).send({ ...slot, status: 'busy-unavailable' })).status).toBe(200);
    const b = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, [{ name: 'patient-reference', valueReference: { reference: `Patient/${patientId}` } }]));
    expect(b.status).toBe(409);
    expect(b.body.issue[0].diagnostics).toMatch(/not available \(busy-unavailable\)/);
  });
});

describe('cancel and reschedule', () => {
  let practitionerId: string;
  let patientId: string;
  let patient: Awaited<ReturnType<typeof patientToken>>;
  let doctor: Awaited<ReturnType<typeof practitionerToken>>;
  beforeAll(async () => {
    ({ practitionerId } = await bookablePractitioner(s, { timeZone: 'UTC', days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], allDay: true }));
    patientId = await createPatient(s);
    patient = await patientToken(s, patientId);
    doctor = await practitionerToken(s, practitionerId);
  });
  const within = async (fromH: number, toH: number) => {
    const now = Date.now();
    return proposals((await find(s.http, s.base, { start: new Date(now + fromH * 3600_000).toISOString(), end: new Date(now + toH * 3600_000).toISOString(), practitioner: `Practitioner/${practitionerId}` })).bundle);
  };
  const book = async (a: Appointment, client = patient) => {
    const r = await client.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, client === patient ? [] : [{ name: 'patient-reference', valueReference: { reference: `Patient/${patientId}` } }]));
    expect(r.status).toBe(201);
    return r.body.entry[0].resource as Appointment;
  };
  const cancel = (client: typeof patient, id: string, reason?: string) =>
    client.post(`${s.base}/Appointment/${id}/$cancel`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters', parameter: reason ? [{ name: 'reason', valueString: reason }] : [] });

  test('a patient books for themselves only', async () => {
    const [a] = await within(50, 52);
    const other = await createPatient(s);
    const r = await patient.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, [{ name: 'patient-reference', valueReference: { reference: `Patient/${other}` } }]));
    expect(r.status).toBe(403);
    const mine = await book(a);
    expect(mine.participant.map((p) => p.actor?.reference)).toContain(`Patient/${patientId}`);
    expect(mine.status).toBe('booked');
  });

  test('a patient can cancel 24 h or more ahead ($cancel); the slot is free again at once', async () => {
    const [a] = await within(30, 32);
    const mine = await book(a);
    expect((await within(30, 32)).map((x) => x.start)).not.toContain(a.start);
    const r = await cancel(patient, mine.id!);
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('cancelled');
    expect((await within(30, 32)).map((x) => x.start)).toContain(a.start);
    expect((await s.http.get(`${s.base}/${a.slot![0].reference}`)).body.status).toBe('free');
  });

  test('a patient cannot cancel less than 24 h ahead, neither by $cancel nor by PATCH; a practitioner can, with a reason', async () => {
    const [a] = await within(5, 7);
    const mine = await book(a, doctor);
    const r = await cancel(patient, mine.id!);
    expect(r.status).toBe(422);
    expect(r.body.issue[0].diagnostics).toBe('Appointments can be cancelled or moved online up to 24 hours ahead. Please call +1-555-0100 to change this appointment.');
    const p = await patient.patch(`${s.base}/Appointment/${mine.id}`).set('Content-Type', 'application/json-patch+json').send([{ op: 'replace', path: '/status', value: 'cancelled' }]);
    expect(p.status).toBe(422);
    expect((await s.http.get(`${s.base}/Appointment/${mine.id}`)).body.status).toBe('booked');
    expect((await cancel(doctor, mine.id!)).status).toBe(400); // a reason is required from staff
    const d = await cancel(doctor, mine.id!, 'Practitioner ill');
    expect(d.status).toBe(200);
    expect(d.body.cancelationReason.text).toBe('Practitioner ill');
    expect((await within(5, 7)).map((x) => x.start)).toContain(a.start);
    expect((await cancel(doctor, mine.id!, 'again')).status).toBe(409);
  });

  test('PATCH status=cancelled by a practitioner frees the slot', async () => {
    const [a] = await within(9, 10);
    const mine = await book(a, doctor);
    const p = await doctor.patch(`${s.base}/Appointment/${mine.id}`).set('Content-Type', 'application/json-patch+json').send([{ op: 'replace', path: '/status', value: 'cancelled' }]);
    expect(p.status).toBe(200);
    expect((await s.http.get(`${s.base}/${a.slot![0].reference}`)).body.status).toBe('free');
  });

  test('reschedule is atomic: a taken target is a 409 and the old booking stays intact; a free target moves it', async () => {
    const [a, b, c] = await within(60, 64);
    const mine = await book(a);
    const taken = await book(b, doctor);
    expect(taken.id).toBeTruthy();
    const r = await patient.post(`${s.base}/Appointment/${mine.id}/$reschedule`).set('Content-Type', FHIR_JSON).send(bookBody(b));
    expect(r.status).toBe(409);
    expect(r.body.issue[0].diagnostics).toMatch(/This slot was just taken/);
    const still = (await s.http.get(`${s.base}/Appointment/${mine.id}`)).body as Appointment;
    expect(still.status).toBe('booked');
    expect(still.start).toBe(a.start);
    expect(still.meta!.versionId).toBe('1');
    expect((await s.http.get(`${s.base}/${a.slot![0].reference}`)).body.status).toBe('busy');
    // Argonaut style: $book with cancelled-appt-id moves it in one step
    const ok = await patient.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(c, [{ name: 'cancelled-appt-id', valueString: `Appointment/${mine.id}` }]));
    expect(ok.status).toBe(200);
    expect(ok.body.entry[0].resource.start).toBe(c.start);
    expect(ok.body.entry[0].resource.id).toBe(mine.id);
    expect((await s.http.get(`${s.base}/${a.slot![0].reference}`)).body.status).toBe('free');
    expect((await s.http.get(`${s.base}/${c.slot![0].reference}`)).body.status).toBe('busy');
  });

  test('a patient cannot move an appointment less than 24 h ahead', async () => {
    const [a, , b] = await within(4, 8);
    const mine = await book(a, doctor);
    const r = await patient.post(`${s.base}/Appointment/${mine.id}/$reschedule`).set('Content-Type', FHIR_JSON).send(bookBody(b));
    expect(r.status).toBe(422);
    expect((await doctor.post(`${s.base}/Appointment/${mine.id}/$reschedule`).set('Content-Type', FHIR_JSON).send(bookBody(b))).status).toBe(200);
  });

  test("a patient cannot cancel another patient's appointment (404, hidden)", async () => {
    const [a] = await within(70, 72);
    const other = await createPatient(s);
    const r = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, [{ name: 'patient-reference', valueReference: { reference: `Patient/${other}` } }]));
    expect(r.status).toBe(201);
    expect((await cancel(patient, r.body.entry[0].resource.id)).status).toBe(404);
    expect((await s.http.post(`${s.base}/Appointment/unknown-id/$cancel`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'x' }] })).status).toBe(404);
  });
});

describe('the practitioner calendar', () => {
  test('Appointment?practitioner=&date=ge&date=lt&_include=Appointment:patient gives the week and its patients in one request', async () => {
    const { practitionerId } = await bookablePractitioner(s, { timeZone: 'UTC' });
    const monday = nextWeekday(1, 7);
    const week = proposals((await find(s.http, s.base, { start: `${monday}T00:00:00Z`, end: `${monday}T23:59:59Z`, practitioner: `Practitioner/${practitionerId}` })).bundle);
    const patients: string[] = [];
    for (const a of week.slice(0, 4)) {
      const p = await createPatient(s);
      patients.push(p);
      const r = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, [{ name: 'patient-reference', valueReference: { reference: `Patient/${p}` } }]));
      expect(r.status).toBe(201);
    }
    const end = new Date(Date.parse(`${monday}T00:00:00Z`) + 7 * 86_400_000).toISOString().slice(0, 10);
    const t0 = Date.now();
    const cal = await s.http.get(`${s.base}/Appointment?practitioner=Practitioner/${practitionerId}&date=ge${monday}&date=lt${end}&_include=Appointment:patient`);
    const ms = Date.now() - t0;
    expect(cal.status).toBe(200);
    const matches = cal.body.entry.filter((e: { search: { mode: string } }) => e.search.mode === 'match');
    const included = cal.body.entry.filter((e: { search: { mode: string } }) => e.search.mode === 'include').map((e: { resource: { id: string } }) => e.resource.id);
    expect(matches).toHaveLength(4);
    expect(included.sort()).toEqual([...patients].sort());
    expect(ms).toBeLessThan(1000);
  });
});

describe('scheduling events', () => {
  let practitionerId: string;
  let patientId: string;
  beforeAll(async () => {
    ({ practitionerId } = await bookablePractitioner(s, { timeZone: 'UTC', days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], allDay: true }));
    patientId = await createPatient(s);
  });
  const slotsAhead = async (h: number) => {
    const now = Date.now();
    return proposals((await find(s.http, s.base, { start: new Date(now + h * 3600_000).toISOString(), end: new Date(now + (h + 4) * 3600_000).toISOString(), practitioner: `Practitioner/${practitionerId}` })).bundle);
  };

  test('booked, rescheduled, cancelled and slot-freed reach the handlers inside the transaction', async () => {
    const seen: Array<{ e: SchedulingEvent; tenant: string; inTx: boolean }> = [];
    const off = onSchedulingEvent(async (e, c) => {
      const r = await c.tx.raw(`SELECT count(*)::int AS n FROM resources WHERE tenant_id = ? AND res_type = 'Appointment'`, [c.tenant]);
      seen.push({ e, tenant: c.tenant, inTx: r.rows[0].n > 0 });
    });
    try {
      const [a, b] = await slotsAhead(100);
      const booked = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, [{ name: 'patient-reference', valueReference: { reference: `Patient/${patientId}` } }]));
      const id = booked.body.entry[0].resource.id;
      await s.http.post(`${s.base}/Appointment/${id}/$reschedule`).set('Content-Type', FHIR_JSON).send(bookBody(b));
      await s.http.post(`${s.base}/Appointment/${id}/$cancel`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'test' }] });
      expect(seen.map((x) => x.e.kind)).toEqual(['booked', 'rescheduled', 'slot-freed', 'cancelled', 'slot-freed']);
      expect(seen.every((x) => x.tenant === s.tenant && x.inTx)).toBe(true);
      const [bk, rs, f1, c, f2] = seen.map((x) => x.e);
      expect(bk.kind === 'booked' && bk.appointment.id === id && bk.slots[0].status === 'busy').toBe(true);
      expect(rs.kind === 'rescheduled' && rs.previous.start === a.start && rs.appointment.start === b.start).toBe(true);
      expect(f1.kind === 'slot-freed' && `Slot/${f1.slot.id}` === a.slot![0].reference && f1.slot.status === 'free').toBe(true);
      expect(c.kind === 'cancelled' && c.freedSlots.map((x) => `Slot/${x.id}`)[0] === b.slot![0].reference).toBe(true);
      expect(f2.kind).toBe('slot-freed');
    } finally {
      off();
    }
  });

  test('the appointment emails are planned in the transaction of $book, $reschedule and $cancel (outbox rows), not for plain REST writes', async () => {
    const jobs = (id: string) => inTenant(s.db.app, s.tenant, (tx) => listJobs(tx, `appt:${id}:`));
    const [a, b, c] = await slotsAhead(200);
    const booked = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, [{ name: 'patient-reference', valueReference: { reference: `Patient/${patientId}` } }]));
    const id = booked.body.entry[0].resource.id;
    const kinds = async () => (await jobs(id)).filter((j) => j.state !== 'retracted').map((j) => j.kind);
    expect(await kinds()).toEqual(expect.arrayContaining(['appointment.confirmation', 'appointment.reminder']));
    await s.http.post(`${s.base}/Appointment/${id}/$reschedule`).set('Content-Type', FHIR_JSON).send(bookBody(b));
    expect((await jobs(id)).some((j) => j.key.includes(`:${Date.parse(b.start!)}:`))).toBe(true);
    await s.http.post(`${s.base}/Appointment/${id}/$cancel`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'test' }] });
    expect(await kinds()).toContain('appointment.cancellation');
    const raw = await s.http.post(`${s.base}/Appointment`).set('Content-Type', FHIR_JSON).send({ ...c, status: 'booked', participant: [...c.participant, { actor: { reference: `Patient/${patientId}` }, status: 'accepted' }] });
    expect(raw.status).toBe(201);
    expect(await jobs(raw.body.id)).toEqual([]);
  });

  test('a throwing handler rolls the booking back: nothing is written, the slot stays free', async () => {
    const off = onSchedulingEvent((e) => {
      if (e.kind === 'booked') throw new Error('outbox unavailable');
    });
    const [a] = await slotsAhead(120);
    try {
      const r = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, [{ name: 'patient-reference', valueReference: { reference: `Patient/${patientId}` } }]));
      expect(r.status).toBe(500);
      expect(r.body.resourceType).toBe('OperationOutcome');
    } finally {
      off();
    }
    const slot = (await s.http.get(`${s.base}/${a.slot![0].reference}`)).body as Slot;
    expect(slot.status).toBe('free');
    expect(slot.meta!.versionId).toBe('1');
    expect((await s.http.get(`${s.base}/Appointment?slot=${a.slot![0].reference}`)).body.total).toBe(0);
    const ok = await s.http.post(`${s.base}/Appointment/$book`).set('Content-Type', FHIR_JSON).send(bookBody(a, [{ name: 'patient-reference', valueReference: { reference: `Patient/${patientId}` } }]));
    expect(ok.status).toBe(201);
  });
});
