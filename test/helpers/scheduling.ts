/** Shared set-up for the scheduling tests: a practitioner with weekly hours, its Slots, tokens. */
import type { Appointment, Bundle, PractitionerRole } from 'fhir/r4';
import { EXT } from '../../server/scheduling/rules';
import { FHIR_JSON, TestServer } from './test-server';

export { EXT };

export async function createPractitioner(s: TestServer, base = s.base, name = 'Test'): Promise<string> {
  const r = await s.http.post(`${base}/Practitioner`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Practitioner', name: [{ family: name }] });
  expect(r.status).toBe(201);
  return r.body.id;
}

export function role(practitionerId: string, opts: { timeZone?: string; days?: string[]; start?: string; end?: string; allDay?: boolean; extra?: Partial<PractitionerRole> } = {}): PractitionerRole {
  return {
    resourceType: 'PractitionerRole',
    active: true,
    practitioner: { reference: `Practitioner/${practitionerId}` },
    extension: [{ url: EXT.timeZone, valueCode: opts.timeZone ?? 'America/New_York' }],
    availableTime: [
      opts.allDay
        ? { daysOfWeek: (opts.days ?? ['mon', 'tue', 'wed', 'thu', 'fri']) as never, allDay: true }
        : { daysOfWeek: (opts.days ?? ['mon', 'tue', 'wed', 'thu', 'fri']) as never, availableStartTime: opts.start ?? '09:00:00', availableEndTime: opts.end ?? '17:00:00' },
    ],
    ...opts.extra,
  };
}

/** A practitioner with hours; returns the ids. */
export async function bookablePractitioner(s: TestServer, opts: Parameters<typeof role>[1] = {}, base = s.base) {
  const practitionerId = await createPractitioner(s, base);
  const r = await s.http.post(`${base}/PractitionerRole`).set('Content-Type', FHIR_JSON).send(role(practitionerId, opts));
  if (r.status !== 201) throw new Error(`PractitionerRole: ${r.status} ${JSON.stringify(r.body)}`);
  return { practitionerId, roleId: r.body.id as string, role: r.body as PractitionerRole };
}

export async function createPatient(s: TestServer, base = s.base): Promise<string> {
  const r = await s.http.post(`${base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', name: [{ family: 'Booker' }] });
  expect(r.status).toBe(201);
  return r.body.id;
}

export const patientToken = (s: TestServer, patientId: string) =>
  s.as({ scope: 'openid fhirUser user/*.cruds', role: 'patient', sub: `u-${patientId}`, fhirUser: `Patient/${patientId}` });
export const practitionerToken = (s: TestServer, practitionerId: string) =>
  s.as({ scope: 'openid fhirUser user/*.cruds', role: 'practitioner', sub: `u-${practitionerId}`, fhirUser: `Practitioner/${practitionerId}` });

export async function find(client: { post: TestServer['http']['post'] } | TestServer['http'], base: string, params: Record<string, string>): Promise<{ status: number; bundle: Bundle; body: any }> {
  const r = await client
    .post(`${base}/Appointment/$find`)
    .set('Content-Type', FHIR_JSON)
    .send({ resourceType: 'Parameters', parameter: Object.entries(params).map(([name, v]) => (name.includes('reference') || name === 'practitioner' ? { name, valueReference: { reference: v } } : { name, valueString: v })) });
  return { status: r.status, bundle: r.body as Bundle, body: r.body };
}

export const proposals = (b: Bundle) => (b.entry ?? []).map((e) => e.resource as Appointment);

export function bookBody(a: Appointment, extra: Array<Record<string, unknown>> = []) {
  return { resourceType: 'Parameters', parameter: [{ name: 'appointment-resource', resource: a }, ...extra] };
}

/** Next local date (yyyy-mm-dd) of the given ISO weekday (1 = Monday), at least `minDays` ahead. */
export function nextWeekday(isoDay: number, minDays = 2): string {
  const d = new Date(Date.now() + minDays * 86_400_000);
  while (((d.getUTCDay() + 6) % 7) + 1 !== isoDay) d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
}
