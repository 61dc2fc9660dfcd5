/**
 * Practitioners' calendar feeds: /calendar/{tenant}/{token}.ics is a valid RFC 5545 calendar of
 * the practitioner's booked appointments (UTC times, stable UIDs, initials by default), the token
 * is issued and rotated by $calendar-token (the practitioner or an admin), a rotated or wrong
 * token answers 404, and every read leaves an AuditEvent.
 */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { inTenant } from '../server/db/tenant-tx';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(() => s.close());

const HOUR = 3_600_000;

async function post(tenant: string, resource: Record<string, unknown>): Promise<Record<string, any>> {
  const r = await s.http.post(`/fhir/${tenant}/${resource.resourceType}`).set('Content-Type', FHIR_JSON).send(resource);
  expect(r.status).toBe(201);
  return r.body;
}

interface Parsed {
  lines: string[];
  calendar: Record<string, string>;
  events: Array<Record<string, string>>;
}

/** RFC 5545 checks (CRLF, lines of at most 75 octets) and a small parser (unfolded lines). */
function parseIcs(text: string): Parsed {
  expect(text.endsWith('\r\n')).toBe(true);
  const physical = text.slice(0, -2).split('\r\n');
  for (const l of physical) {
    expect(l).not.toContain('\n');
    expect(Buffer.byteLength(l, 'utf8')).toBeLessThanOrEqual(75);
  }
  const lines: string[] = [];
  for (const l of physical) {
    if (l.startsWith(' ') || l.startsWith('\t')) lines[lines.length - 1] += l.slice(1);
    else lines.push(l);
  }
  expect(lines[0]).toBe('BEGIN:VCALENDAR');
  expect(lines[lines.length - 1]).toBe('END:VCALENDAR');
  const calendar: Record<string, string> = {};
  const events: Array<Record<string, string>> = [];
  let current: Record<string, string> | undefined;
  let depth = 0;
  for (const l of lines) {
    const i = l.indexOf(':');
    const name = l.slice(0, i).split(';')[0];
    const value = l.slice(i + 1);
    if (name === 'BEGIN') {
      depth++;
      if (value === 'VEVENT') current = {};
      continue;
    }
    if (name === 'END') {
      depth--;
      if (value === 'VEVENT' && current) events.push(current), (current = undefined);
      continue;
    }
    if (current) current[name] = value;
    else if (depth === 1) calendar[name] = value;
  }
  return { lines, calendar, events };
}

async function practice(settings = {}) {
  const tenant = await s.newTenant({ rateLimitPerMinute: 0, ...settings });
  const dr = await post(tenant, { resourceType: 'Practitioner', name: [{ family: 'Rivera', given: ['Dana'] }] });
  const other = await post(tenant, { resourceType: 'Practitioner', name: [{ family: 'Other', given: ['Olga'] }] });
  const room = await post(tenant, { resourceType: 'Location', name: 'Room 1, first floor; back' });
  const ana = await post(tenant, { resourceType: 'Patient', name: [{ family: 'Sousa', given: ['Ana', 'Maria'] }] });
  const ben = await post(tenant, { resourceType: 'Patient', name: [{ family: 'Okafor', given: ['Ben'] }] });
  const at = (days: number, status = 'booked', who = dr.id, patient = ana.id) => {
    const start = new Date(Date.now() + days * 24 * HOUR);
    start.setUTCMinutes(0, 0, 0);
    return post(tenant, {
      resourceType: 'Appointment',
      status,
      description: 'Follow-up for depression', // must never reach the feed
      start: start.toISOString(),
      end: new Date(start.getTime() + HOUR / 2).toISOString(),
      participant: [
        { actor: { reference: `Patient/${patient}` }, status: 'accepted' },
        { actor: { reference: who.includes('/') ? who : `Practitioner/${who}` }, status: 'accepted' },
        { actor: { reference: `Location/${room.id}` }, status: 'accepted' },
      ],
    });
  };
  return { tenant, dr, other, room, ana, ben, at };
}

async function issue(tenant: string, practitioner: string, client = s.http): Promise<{ status: number; url?: string; body: any }> {
  const r = await client.post(`/fhir/${tenant}/Practitioner/${practitioner}/$calendar-token`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters' });
  const url = r.body.parameter?.find((p: { name: string }) => p.name === 'url')?.valueUrl;
  return { status: r.status, url, body: r.body };
}

const path = (url: string) => new URL(url).pathname;

test('the feed is a valid iCalendar of the practitioner\'s booked appointments, in UTC, with initials only', async () => {
  const p = await practice();
  const booked = await p.at(2);
  const second = await p.at(5, 'booked', p.dr.id, p.ben.id);
  await p.at(3, 'cancelled');
  await p.at(4, 'proposed');
  await p.at(6, 'booked', p.other.id); // another practitioner's
  const role = await post(p.tenant, { resourceType: 'PractitionerRole', practitioner: { reference: `Practitioner/${p.dr.id}` } });
  const viaRole = await p.at(7, 'booked', `PractitionerRole/${role.id}`); // booked through the practitioner's role
  const { status, url, body } = await issue(p.tenant, p.dr.id);
  expect(status).toBe(200);
  expect(url).toMatch(new RegExp(`^${s.url}/calendar/${p.tenant}/[A-Za-z0-9_-]{43}\\.ics$`));
  expect(body.parameter.find((x: { name: string }) => x.name === 'token').valueString).toBe(/([^/]+)\.ics$/.exec(url!)![1]);

  const r = await s.anon.get(path(url!)); // no bearer token: the URL is the credential
  expect(r.status).toBe(200);
  expect(r.headers['content-type']).toBe('text/calendar; charset=utf-8');
  expect(r.headers['cache-control']).toBe('no-store');
  const ics = parseIcs(r.text);
  expect(ics.calendar.VERSION).toBe('2.0');
  expect(ics.calendar.PRODID).toBeTruthy();
  expect(ics.calendar.METHOD).toBe('PUBLISH');
  expect(ics.events).toHaveLength(3);
  const host = new URL(s.url).hostname;
  expect(ics.events.map((e) => e.UID)).toEqual([`appointment-${booked.id}@${host}`, `appointment-${second.id}@${host}`, `appointment-${viaRole.id}@${host}`]);
  const utc = (iso: string) => iso.replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  for (const [e, a] of [[ics.events[0], booked], [ics.events[1], second]] as const) {
    expect(e.DTSTART).toBe(utc(a.start));
    expect(e.DTEND).toBe(utc(a.end));
    expect(e.DTSTAMP).toMatch(/^\d{8}T\d{6}Z$/);
    expect(e.STATUS).toBe('CONFIRMED');
    expect(e.SEQUENCE).toBe('0');
    expect(e.DURATION).toBeUndefined();
    expect(e.LOCATION).toBe('Room 1\\, first floor\\; back'); // TEXT escaping
  }
  expect(ics.events.map((e) => e.SUMMARY)).toEqual(['Appointment: A.S.', 'Appointment: B.O.', 'Appointment: A.S.']);
  expect(r.text).not.toMatch(/Sousa|Okafor|Ana|depression/);

  // an update keeps the UID and raises SEQUENCE
  const moved = { ...booked, start: new Date(Date.parse(booked.start) + HOUR).toISOString(), end: new Date(Date.parse(booked.end) + HOUR).toISOString() };
  expect((await s.http.put(`/fhir/${p.tenant}/Appointment/${booked.id}`).set('Content-Type', FHIR_JSON).send(moved)).status).toBe(200);
  const again = parseIcs((await s.anon.get(path(url!))).text);
  const ev = again.events.find((e) => e.UID === `appointment-${booked.id}@${host}`)!;
  expect([ev.SEQUENCE, ev.DTSTART]).toEqual(['1', utc(moved.start)]);
});

test('patient names follow the tenant setting: full names, or none', async () => {
  const full = await practice({ calendarPatientNames: 'full' });
  await full.at(2);
  const f = parseIcs((await s.anon.get(path((await issue(full.tenant, full.dr.id)).url!))).text);
  expect(f.events.map((e) => e.SUMMARY)).toEqual(['Appointment: Ana Maria Sousa']);
  const none = await practice({ calendarPatientNames: 'none' });
  await none.at(2);
  const n = parseIcs((await s.anon.get(path((await issue(none.tenant, none.dr.id)).url!))).text);
  expect(n.events.map((e) => e.SUMMARY)).toEqual(['Appointment']);
});

test('rotation invalidates the old URL; a wrong token, a malformed one or another tenant answer 404', async () => {
  const p = await practice();
  await p.at(1);
  const first = (await issue(p.tenant, p.dr.id)).url!;
  expect((await s.anon.get(path(first))).status).toBe(200);
  const second = (await issue(p.tenant, p.dr.id)).url!;
  expect(second).not.toBe(first);
  expect((await s.anon.get(path(first))).status).toBe(404);
  expect((await s.anon.get(path(second))).status).toBe(200);
  const token = /([^/]+)\.ics$/.exec(second)![1];
  const wrong = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
  expect((await s.anon.get(`/calendar/${p.tenant}/${wrong}.ics`)).status).toBe(404);
  expect((await s.anon.get(`/calendar/${p.tenant}/not-a-token.ics`)).status).toBe(404);
  expect((await s.anon.get(`/calendar/${p.tenant}/${token}`)).status).toBe(404);
  const elsewhere = await s.newTenant();
  expect((await s.anon.get(`/calendar/${elsewhere}/${token}.ics`)).status).toBe(404);
  expect((await s.anon.get(`/calendar/no-such-tenant/${token}.ics`)).status).toBe(404);
  // only a hash is stored
  const stored = await inTenant(s.db.owner, p.tenant, (tx) => tx.raw(`SELECT token_hash FROM calendar_tokens WHERE tenant_id = ?`, [p.tenant]));
  expect(stored.rows).toHaveLength(1);
  expect(stored.rows[0].token_hash).not.toContain(token);
  expect(stored.rows[0].token_hash).toMatch(/^[0-9a-f]{64}$/);
});

test('$calendar-token: the practitioner themselves or an admin; not another practitioner or a patient', async () => {
  const p = await practice();
  const as = (fhirUser: string, role: string) => s.as({ tenant: p.tenant, scope: 'user/*.cruds', fhirUser, role: role as never, sub: fhirUser, clientId: 'ehr' });
  expect((await issue(p.tenant, p.dr.id, await as(`Practitioner/${p.dr.id}`, 'practitioner'))).status).toBe(200);
  expect((await issue(p.tenant, p.dr.id, await as('Practitioner/someone', 'admin'))).status).toBe(200);
  expect((await issue(p.tenant, p.dr.id, await as(`Practitioner/${p.other.id}`, 'practitioner'))).status).toBe(403);
  expect((await issue(p.tenant, p.dr.id, await as(`Patient/${p.ana.id}`, 'patient'))).status).toBe(403);
  expect((await issue(p.tenant, 'unknown-practitioner')).status).toBe(404);
  expect((await s.http.get(`/fhir/${p.tenant}/Practitioner/${p.dr.id}/$calendar-token`)).status).toBe(405);
  expect((await s.http.post(`/fhir/${p.tenant}/Patient/${p.ana.id}/$calendar-token`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Parameters' })).status).toBe(404);
  // the CapabilityStatement lists it
  const cs = await s.anon.get(`/fhir/${p.tenant}/metadata`);
  const prac = cs.body.rest[0].resource.find((r: { type: string }) => r.type === 'Practitioner');
  expect(prac.operation.map((o: { name: string }) => o.name)).toContain('calendar-token');
});

test('every feed read leaves an AuditEvent; a wrong token a security event', async () => {
  const p = await practice();
  const a = await p.at(1);
  const url = (await issue(p.tenant, p.dr.id)).url!;
  await s.anon.get(path(url));
  await s.anon.get(`/calendar/${p.tenant}/${'x'.repeat(43)}.ics`);
  await s.audit.flush();
  const r = await inTenant(s.db.owner, p.tenant, (tx) =>
    tx.raw(`SELECT content::text AS c FROM resources WHERE tenant_id = ? AND res_type = 'AuditEvent' ORDER BY last_updated`, [p.tenant]),
  );
  const events = r.rows.map((x: { c: string }) => JSON.parse(x.c));
  const read = events.find((e: any) => e.outcomeDesc?.startsWith('calendar feed of'));
  expect(read).toBeDefined();
  expect(read.type.code).toBe('110110');
  expect(read.action).toBe('R');
  expect(read.agent[0].who.reference).toBe(`Practitioner/${p.dr.id}`);
  const refs = read.entity.map((e: any) => e.what?.reference);
  expect(refs).toEqual(expect.arrayContaining([`Patient/${p.ana.id}`, `Practitioner/${p.dr.id}`, `Appointment/${a.id}`]));
  const refused = events.find((e: any) => e.outcomeDesc === 'calendar feed with an unknown token');
  expect(refused.type.code).toBe('110113');
});
