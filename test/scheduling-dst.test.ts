/**
 * Daylight-saving changes through HTTP: a practitioner with daily hours 09:00-17:00 in
 * America/New_York and one in Europe/Berlin, Slots for a year ahead (slotHorizonDays 366), and
 * $find on the day before, the day of and the day after each of the next switches: 8 slots, the
 * first at 09:00 local, none missing or duplicated, the UTC time moving by the hour.
 */
import { DateTime } from 'luxon';
import type { Appointment } from 'fhir/r4';
import { startTestServer, TestServer } from './helpers/test-server';
import { bookablePractitioner, find, proposals } from './helpers/scheduling';

let s: TestServer;
let base: string;
beforeAll(async () => {
  s = await startTestServer();
  const tenant = await s.newTenant({ rateLimitPerMinute: 0, slotHorizonDays: 366 });
  base = `/fhir/${tenant}`;
});
afterAll(() => s.close());

/** The local dates within the next year on which the zone's UTC offset changes. */
function switchDays(zone: string): string[] {
  const out: string[] = [];
  let d = DateTime.now().setZone(zone).startOf('day').plus({ days: 2 });
  for (let i = 0; i < 360; i++, d = d.plus({ days: 1 })) {
    if (d.offset !== d.plus({ days: 1 }).offset) out.push(d.toISODate()!); // the switch happens during d
  }
  return out;
}

describe.each([['America/New_York'], ['Europe/Berlin']])('%s', (zone) => {
  test('09:00 local on both sides of each switch; the switch day has exactly 8 slots', async () => {
    const { practitionerId } = await bookablePractitioner(s, { timeZone: zone, days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] }, base);
    const days = switchDays(zone);
    expect(days.length).toBeGreaterThanOrEqual(1);
    for (const day of days) {
      const d = DateTime.fromISO(day, { zone });
      const offsets: number[] = [];
      for (const local of [d.minus({ days: 1 }), d, d.plus({ days: 1 })]) {
        const start = local.startOf('day').toUTC().toISO()!;
        const end = local.endOf('day').toUTC().toISO()!;
        const r = await find(s.http, base, { start, end, practitioner: `Practitioner/${practitionerId}` });
        expect(r.status).toBe(200);
        const list = proposals(r.bundle) as Appointment[];
        const hours = list.map((a) => DateTime.fromISO(a.start!, { zone }).toFormat('HH:mm'));
        expect(hours).toEqual(['09:00', '10:00', '11:00', '12:00', '13:00', '14:00', '15:00', '16:00']);
        expect(new Set(list.map((a) => a.start)).size).toBe(8);
        for (const a of list) expect(Date.parse(a.end!) - Date.parse(a.start!)).toBe(3600_000);
        offsets.push(DateTime.fromISO(list[0].start!, { zone }).offset);
      }
      // the UTC instant of 09:00 moved by the switch
      expect(Math.abs(offsets[2] - offsets[0])).toBe(60);
    }
  });
});
