/**
 * Weekly hours -> concrete intervals, in the practitioner's IANA time zone (luxon over Intl), so
 * that 09:00 stays 09:00 local on both sides of a daylight-saving change. Slots step by absolute
 * minutes from the local start of each block of hours: a switch day has neither missing nor
 * duplicated slots (a 02:00 that does not exist is moved forward by luxon).
 */
import { DateTime } from 'luxon';
import { Rules, WeeklyHours, WEEKDAYS } from './rules';

export interface Interval {
  start: Date;
  end: Date;
  /** Inside blocked time (one-off or recurring): the Slot is busy-unavailable. */
  blocked: boolean;
}

function local(date: DateTime, hhmm: string, zone: string): DateTime {
  if (hhmm === '24:00') return date.plus({ days: 1 }).startOf('day');
  const [h, m] = hhmm.split(':').map(Number);
  return DateTime.fromObject({ year: date.year, month: date.month, day: date.day, hour: h, minute: m }, { zone });
}

const weekday = (d: DateTime) => WEEKDAYS[d.weekday - 1];

function recurringOn(day: DateTime, blocks: WeeklyHours[], zone: string): Array<[number, number]> {
  const wd = weekday(day);
  return blocks.filter((b) => b.days.includes(wd)).map((b) => [local(day, b.start, zone).toMillis(), local(day, b.end, zone).toMillis()]);
}

/** The slots the rules give with a start in [from, to). */
export function slotIntervals(rules: Rules, from: Date, to: Date): Interval[] {
  const zone = rules.timeZone;
  const stepMs = rules.slotMinutes * 60_000;
  const out: Interval[] = [];
  const oneOff = rules.blocks.map((b) => [Date.parse(b.start), Date.parse(b.end)] as [number, number]);
  const last = DateTime.fromJSDate(to, { zone }).startOf('day');
  for (let day = DateTime.fromJSDate(from, { zone }).startOf('day'); day <= last; day = day.plus({ days: 1 })) {
    const wd = weekday(day);
    const blocked = [...oneOff, ...recurringOn(day, rules.recurringBlocks, zone)];
    for (const h of rules.hours) {
      if (!h.days.includes(wd)) continue;
      const end = local(day, h.end, zone).toMillis();
      for (let t = local(day, h.start, zone).toMillis(); t + stepMs <= end; t += stepMs) {
        if (t < from.getTime() || t >= to.getTime()) continue;
        const e = t + stepMs;
        out.push({ start: new Date(t), end: new Date(e), blocked: blocked.some(([bs, be]) => bs < e && be > t) });
      }
    }
  }
  out.sort((a, b) => a.start.getTime() - b.start.getTime());
  // two overlapping blocks of hours give one slot per start
  return out.filter((s, i) => i === 0 || s.start.getTime() !== out[i - 1].start.getTime());
}

/** Whether [start, end) lies inside the weekly hours and outside every blocked time. */
export function isOpen(rules: Rules, start: Date, end: Date): boolean {
  const zone = rules.timeZone;
  const s = start.getTime();
  const e = end.getTime();
  if (rules.blocks.some((b) => Date.parse(b.start) < e && Date.parse(b.end) > s)) return false;
  const day = DateTime.fromMillis(s, { zone }).startOf('day');
  if (recurringOn(day, rules.recurringBlocks, zone).some(([bs, be]) => bs < e && be > s)) return false;
  const wd = weekday(day);
  return rules.hours.some((h) => h.days.includes(wd) && local(day, h.start, zone).toMillis() <= s && local(day, h.end, zone).toMillis() >= e);
}

/**
 * The open time of the rules over [from, to): inside the weekly hours, outside blocked time, as
 * sorted absolute intervals; computed once per $find, so that checking a proposal is arithmetic.
 */
export function openWindows(rules: Rules, from: Date, to: Date): Array<[number, number]> {
  const zone = rules.timeZone;
  const open: Array<[number, number]> = [];
  const blocks: Array<[number, number]> = rules.blocks.map((b) => [Date.parse(b.start), Date.parse(b.end)]);
  const last = DateTime.fromJSDate(to, { zone }).startOf('day');
  for (let day = DateTime.fromJSDate(from, { zone }).startOf('day'); day <= last; day = day.plus({ days: 1 })) {
    const wd = weekday(day);
    for (const h of rules.hours) if (h.days.includes(wd)) open.push([local(day, h.start, zone).toMillis(), local(day, h.end, zone).toMillis()]);
    blocks.push(...recurringOn(day, rules.recurringBlocks, zone));
  }
  // subtract the blocks from the open intervals
  let windows = open.sort((a, b) => a[0] - b[0]);
  for (const [bs, be] of blocks) {
    const next: Array<[number, number]> = [];
    for (const [s, e] of windows) {
      if (be <= s || bs >= e) next.push([s, e]);
      else {
        if (bs > s) next.push([s, bs]);
        if (be < e) next.push([be, e]);
      }
    }
    windows = next;
  }
  return windows;
}

/** Whether [s, e) lies inside one of the windows (sorted, from openWindows). */
export function insideWindows(windows: Array<[number, number]>, s: number, e: number): boolean {
  let lo = 0;
  let hi = windows.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (windows[mid][1] < e) lo = mid + 1;
    else if (windows[mid][0] > s) hi = mid - 1;
    else return true;
  }
  return false;
}
