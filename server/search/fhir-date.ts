/** FHIR date/dateTime/instant values as half-open UTC ranges [lo, hi) at their own precision. */

const DATE_RE =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** Date.UTC, except that years 0-99 stay years 0-99 (Date.UTC maps them to 1900-1999). */
function utc(year: number, month: number, day = 1, hour = 0, minute = 0, second = 0, ms = 0): number {
  const d = new Date(Date.UTC(2000, 0, 1));
  d.setUTCFullYear(year, month, day);
  d.setUTCHours(hour, minute, second, ms);
  return d.getTime();
}

export interface DateRange {
  lo: Date;
  hi: Date; // exclusive
}

/** Parses a FHIR date, dateTime or instant (any precision). Returns undefined when malformed. */
export function parseFhirDate(value: string): DateRange | undefined {
  const m = DATE_RE.exec(value.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const year = Number(y);
  const month = mo ? Number(mo) - 1 : 0;
  const day = d ? Number(d) : 1;
  if (mo && (month < 0 || month > 11)) return undefined;
  if (d && (day < 1 || day > 31)) return undefined;
  const hour = h ? Number(h) : 0;
  const minute = mi ? Number(mi) : 0;
  const second = s ? Number(s) : 0;
  if (hour > 23 || minute > 59 || second > 60) return undefined;
  const ms = frac ? Math.round(Number(frac) * 1000) : 0;
  let offsetMin = 0;
  if (tz && tz !== 'Z') {
    const sign = tz[0] === '-' ? -1 : 1;
    const th = Number(tz.slice(1, 3));
    const tm = Number(tz.slice(4, 6));
    if (th > 14 || tm > 59) return undefined;
    offsetMin = sign * (th * 60 + tm);
  }
  const base = utc(year, month, day, hour, minute, second, ms) - offsetMin * 60_000;
  const lo = new Date(base);
  if (Number.isNaN(lo.getTime())) return undefined;
  if (d && new Date(utc(year, month, day)).getUTCDate() !== day) return undefined;
  let hi: Date;
  if (!mo) hi = new Date(utc(year + 1, 0, 1));
  else if (!d) hi = new Date(utc(year, month + 1, 1));
  else if (!h) hi = new Date(utc(year, month, day + 1));
  else if (!s) hi = new Date(base + 60_000);
  else if (!frac) hi = new Date(base + 1000);
  else hi = new Date(base + 1);
  return { lo, hi };
}

export const MIN_DATE = new Date(Date.UTC(-271820, 0, 1));
export const MAX_DATE = new Date(Date.UTC(275759, 0, 1));
