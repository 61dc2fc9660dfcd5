/** slotIntervals on the switch days themselves, including the hours the switch happens in. */
import { DateTime } from 'luxon';
import { slotIntervals } from './availability';
import type { Rules } from './rules';

const rules = (timeZone: string, start: string, end: string): Rules => ({
  timeZone, slotMinutes: 60, hours: [{ days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], start, end }], types: [], blocks: [], recurringBlocks: [],
});

function day(zone: string, date: string, r: Rules) {
  const d = DateTime.fromISO(date, { zone });
  return slotIntervals(r, d.startOf('day').toJSDate(), d.endOf('day').toJSDate()).map((i) => DateTime.fromJSDate(i.start, { zone }).toFormat('HH:mm ZZ'));
}

test.each([
  ['America/New_York', '2027-03-14', '2027-11-07'],
  ['Europe/Berlin', '2027-03-28', '2027-10-31'],
])('%s: 00:00-06:00 has 5 real hours in spring and 7 in autumn, no instant twice', (zone, spring, autumn) => {
  const night = rules(zone, '00:00', '06:00');
  const sp = day(zone, spring, night);
  const au = day(zone, autumn, night);
  expect(sp).toHaveLength(5);
  expect(au).toHaveLength(7);
  expect(new Set(sp).size).toBe(5);
  expect(new Set(au).size).toBe(7);
  const office = rules(zone, '09:00', '17:00');
  for (const date of [spring, autumn]) expect(day(zone, date, office).map((x) => x.slice(0, 5))).toEqual(['09:00', '10:00', '11:00', '12:00', '13:00', '14:00', '15:00', '16:00']);
});

test('blocked time marks slots busy-unavailable (one-off and recurring)', () => {
  const r: Rules = {
    ...rules('Europe/Berlin', '09:00', '12:00'),
    blocks: [{ start: '2027-01-04T08:00:00Z', end: '2027-01-04T09:00:00Z' }], // 09:00-10:00 Berlin
    recurringBlocks: [{ days: ['mon'], start: '11:00', end: '11:30' }],
  };
  const d = DateTime.fromISO('2027-01-04', { zone: 'Europe/Berlin' });
  const out = slotIntervals(r, d.startOf('day').toJSDate(), d.endOf('day').toJSDate());
  expect(out.map((i) => i.blocked)).toEqual([true, false, true]);
});
