/** The tenant's scheduling settings with their defaults (docs/scheduling.md). */
import type { TenantSettings } from '../fhir/types';

export interface SchedulingSettings {
  leadTimeMinutes: number;
  patientCancelMinHours: number;
  horizonDays: number;
  practicePhone?: string;
  timeZone: string;
  waitlistOfferMinutes: number;
}

const num = (v: unknown, dflt: number, min: number, max: number) =>
  typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max ? v : dflt;

export function schedulingSettings(s: TenantSettings): SchedulingSettings {
  return {
    leadTimeMinutes: num(s.bookingLeadTimeMinutes, 120, 0, 60 * 24 * 30),
    patientCancelMinHours: num(s.patientCancelMinHours, 24, 0, 24 * 30),
    horizonDays: num(s.slotHorizonDays, 90, 1, 366),
    practicePhone: s.practicePhone,
    timeZone: s.timeZone || 'UTC',
    waitlistOfferMinutes: num(s.waitlistOfferMinutes, 60, 1, 60 * 24 * 7),
  };
}

/** "2 hours", "1 hour", "90 minutes", "1 day" */
export function duration(minutes: number): string {
  if (minutes % 1440 === 0 && minutes >= 1440) return minutes === 1440 ? '1 day' : `${minutes / 1440} days`;
  if (minutes % 60 === 0 && minutes >= 60) return minutes === 60 ? '1 hour' : `${minutes / 60} hours`;
  return minutes === 1 ? '1 minute' : `${minutes} minutes`;
}

export function tooSoonMessage(s: SchedulingSettings): string {
  return `Appointments must be booked at least ${duration(s.leadTimeMinutes)} in advance. Please call ${s.practicePhone ?? 'the practice'} for same-day appointments.`;
}
