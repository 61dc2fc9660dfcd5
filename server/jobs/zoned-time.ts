/** Wall-clock time in an IANA time zone, with Intl only (no time zone database of our own). */

export interface WallClock {
  year: number;
  month: number; // 1-12
  day: number;
  hour: number;
  minute: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

export function isTimeZone(zone: unknown): zone is string {
  if (typeof zone !== 'string' || !zone) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

export function wallClock(at: Date, zone: string): WallClock {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric' });
    formatters.set(zone, f);
  }
  const p = Object.fromEntries(f.formatToParts(at).map((x) => [x.type, x.value]));
  return { year: Number(p.year), month: Number(p.month), day: Number(p.day), hour: Number(p.hour) % 24, minute: Number(p.minute) };
}

/** The instant at which the zone's clocks show `w` (the later one in a DST gap's aftermath). */
export function zonedInstant(w: WallClock, zone: string): Date {
  const asUtc = Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute);
  let t = asUtc;
  for (let i = 0; i < 3; i++) {
    const seen = wallClock(new Date(t), zone);
    const diff = asUtc - Date.UTC(seen.year, seen.month - 1, seen.day, seen.hour, seen.minute);
    if (diff === 0) break;
    t += diff;
  }
  return new Date(t);
}

/** `w` moved by whole days (calendar arithmetic, time of day kept). */
export function addDays(w: WallClock, days: number): WallClock {
  const d = new Date(Date.UTC(w.year, w.month - 1, w.day + days));
  return { ...w, year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
}

/** "HH:MM" -> minutes after midnight. */
export function parseHm(s: string): number {
  const m = /^([01]?\d|2[0-3]):([0-5]\d)$/.exec(s.trim());
  if (!m) throw new Error(`"${s}" is not a time of day (HH:MM)`);
  return Number(m[1]) * 60 + Number(m[2]);
}

/** e.g. "Thursday, 3 December 2026 at 09:00 (Europe/Paris)". */
export function formatInZone(at: Date, zone: string): string {
  const date = new Intl.DateTimeFormat('en-GB', { timeZone: zone, weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' }).format(at);
  const time = new Intl.DateTimeFormat('en-GB', { timeZone: zone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(at);
  return `${date} at ${time} (${zone})`;
}

export interface QuietHours {
  start: string;
  end: string;
}

/**
 * The quiet window (in `zone`) that contains `at`, or undefined when `at` is outside quiet hours.
 * A window may cross midnight (21:00-08:00).
 */
export function quietWindow(at: Date, quiet: QuietHours, zone: string): { start: Date; end: Date } | undefined {
  const qs = parseHm(quiet.start);
  const qe = parseHm(quiet.end);
  if (qs === qe) return undefined;
  const w = wallClock(at, zone);
  const m = w.hour * 60 + w.minute;
  const day = { ...w, hour: 0, minute: 0 };
  const at_ = (d: WallClock, mins: number) => zonedInstant({ ...d, hour: Math.floor(mins / 60), minute: mins % 60 }, zone);
  if (qs < qe) {
    if (m < qs || m >= qe) return undefined;
    return { start: at_(day, qs), end: at_(day, qe) };
  }
  if (m >= qs) return { start: at_(day, qs), end: at_(addDays(day, 1), qe) };
  if (m < qe) return { start: at_(addDays(day, -1), qs), end: at_(day, qe) };
  return undefined;
}
