/**
 * A practitioner's bookable hours, read from their PractitionerRole (docs/scheduling.md):
 * - weekly hours: PractitionerRole.availableTime (daysOfWeek, availableStartTime/EndTime or allDay),
 *   local times in the role's time zone;
 * - one-off blocked time: PractitionerRole.notAvailable.during;
 * - extensions (urn:fhir-practice-server:StructureDefinition/…): the IANA time zone, the slot
 *   length, appointment types (code, minutes, buffer) and recurring blocked time.
 */
import type { Coding, Extension, PractitionerRole } from 'fhir/r4';
import { IANAZone } from 'luxon';
import type { ValidationIssue } from '../../profiles/validator';
import { ruleIssue } from '../../resources/module';

const SD = 'urn:fhir-practice-server:StructureDefinition/';
export const EXT = {
  timeZone: `${SD}scheduling-time-zone`,
  slotMinutes: `${SD}scheduling-slot-minutes`,
  appointmentType: `${SD}scheduling-appointment-type`,
  recurringBlock: `${SD}scheduling-recurring-block`,
} as const;

export const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

export interface AppointmentType {
  coding?: Coding;
  minutes: number;
  buffer: number;
}

export interface WeeklyHours {
  days: Weekday[];
  /** 'HH:mm' local; end '24:00' for all day */
  start: string;
  end: string;
}

export interface Rules {
  timeZone: string;
  slotMinutes: number;
  hours: WeeklyHours[];
  types: AppointmentType[];
  /** One-off blocks (instants, ISO). */
  blocks: Array<{ start: string; end: string }>;
  recurringBlocks: WeeklyHours[];
}

export const DEFAULT_APPOINTMENT_MINUTES = 60;

const sub = (e: Extension, url: string) => e.extension?.filter((x) => x.url === url) ?? [];
const hhmm = (t: string | undefined) => (t ? t.slice(0, 5) : undefined);

/** The rules of a PractitionerRole, and the problems found (for a 422 on write). */
export function readRules(role: PractitionerRole, defaultTimeZone = 'UTC'): { rules: Rules; issues: ValidationIssue[] } {
  const issues: ValidationIssue[] = [];
  const ext = role.extension ?? [];
  const tz = ext.find((e) => e.url === EXT.timeZone)?.valueCode ?? defaultTimeZone;
  if (!IANAZone.isValidZone(tz)) issues.push(ruleIssue('PractitionerRole.extension', `"${tz}" is not an IANA time zone (e.g. Europe/Berlin)`));
  const types: AppointmentType[] = [];
  for (const e of ext.filter((x) => x.url === EXT.appointmentType)) {
    const minutes = sub(e, 'minutes')[0]?.valuePositiveInt ?? DEFAULT_APPOINTMENT_MINUTES;
    const buffer = sub(e, 'buffer')[0]?.valueUnsignedInt ?? 0;
    if (minutes > 1440 || buffer > 1440) issues.push(ruleIssue('PractitionerRole.extension', 'An appointment type lasts at most 1440 minutes (buffer included)'));
    types.push({ coding: sub(e, 'type')[0]?.valueCoding, minutes, buffer });
  }
  const explicit = ext.find((e) => e.url === EXT.slotMinutes)?.valuePositiveInt;
  const slotMinutes = explicit ?? (types.length ? Math.min(...types.map((t) => t.minutes + t.buffer)) : DEFAULT_APPOINTMENT_MINUTES);
  if (slotMinutes < 5 || slotMinutes > 1440) issues.push(ruleIssue('PractitionerRole.extension', `The slot length must be 5 to 1440 minutes, not ${slotMinutes}`));
  const hours: WeeklyHours[] = [];
  (role.availableTime ?? []).forEach((a, i) => {
    const start = a.allDay ? '00:00' : hhmm(a.availableStartTime);
    const end = a.allDay ? '24:00' : hhmm(a.availableEndTime);
    if (!start || !end) {
      issues.push(ruleIssue(`PractitionerRole.availableTime[${i}]`, 'Give availableStartTime and availableEndTime, or allDay'));
      return;
    }
    if (end !== '24:00' && end <= start) issues.push(ruleIssue(`PractitionerRole.availableTime[${i}]`, `availableEndTime ${end} must be after availableStartTime ${start}`));
    hours.push({ days: (a.daysOfWeek ?? [...WEEKDAYS]) as Weekday[], start, end });
  });
  const blocks: Rules['blocks'] = [];
  (role.notAvailable ?? []).forEach((n, i) => {
    const s = n.during?.start;
    const e = n.during?.end;
    if (!s || !e || !(Date.parse(e) > Date.parse(s))) {
      issues.push(ruleIssue(`PractitionerRole.notAvailable[${i}].during`, 'Blocked time needs during.start and a later during.end'));
      return;
    }
    blocks.push({ start: new Date(s).toISOString(), end: new Date(e).toISOString() });
  });
  const recurringBlocks: WeeklyHours[] = [];
  for (const e of ext.filter((x) => x.url === EXT.recurringBlock)) {
    const days = sub(e, 'day').map((d) => d.valueCode as Weekday).filter((d) => WEEKDAYS.includes(d));
    const start = hhmm(sub(e, 'start')[0]?.valueTime);
    const end = hhmm(sub(e, 'end')[0]?.valueTime);
    if (!start || !end || end <= start) {
      issues.push(ruleIssue('PractitionerRole.extension', 'A recurring block needs start and a later end (valueTime)'));
      continue;
    }
    recurringBlocks.push({ days: days.length ? days : [...WEEKDAYS], start, end });
  }
  return { rules: { timeZone: tz, slotMinutes, hours, types, blocks, recurringBlocks }, issues };
}

/** The types offered: the role's, or one default type of the slot length. */
export function offeredTypes(rules: Rules | undefined, slotMinutes: number): AppointmentType[] {
  return rules?.types.length ? rules.types : [{ minutes: rules ? rules.slotMinutes : slotMinutes, buffer: 0 }];
}

export function matchesType(t: AppointmentType, token: string): boolean {
  const [system, code] = token.includes('|') ? token.split('|', 2) : [undefined, token];
  if (!t.coding) return false;
  return t.coding.code === code && (system === undefined || system === '' || t.coding.system === system);
}
