/**
 * The appointment notification policy and its email jobs.
 *
 * planAppointmentNotices (called in the transaction that books, cancels or moves an Appointment)
 * enqueues, per Patient participant: the confirmation (or cancellation) email now, and the
 * reminders at the tenant's offsets before the start (quiet hours respected); it retracts the
 * reminders that no longer apply. enqueueWaitlistOffer enqueues a waitlist offer with its claim
 * link. Job payloads carry ids only: the handlers load Patient, Practitioner, Location, Slot from
 * the store when they run, send the email in the patient's time zone, and record a FHIR
 * Communication in the job's transaction. See docs/jobs.md for the rules.
 */
import type { Appointment, Communication, FhirResource, Location, Patient, Practitioner, Schedule, Slot } from 'fhir/r4';
import type { Tx } from '../db/tenant-tx';
import type { TenantSettings } from '../fhir/types';
import { store } from '../store/resource-store';
import { Clock, defineJob, enqueueJob, Job, JobContext, retractJobs, systemClock } from './outbox';
import { formatInZone, isTimeZone, QuietHours, quietWindow } from './zoned-time';

export const DEFAULT_REMINDER_OFFSETS = [2880, 120];
export const DEFAULT_CANCELLATION_POLICY = 'Please tell us at least 24 hours ahead if you cannot come, so that someone else can have the time.';
/** Moved reminders go out this long before quiet hours begin. */
export const BEFORE_QUIET_MS = 30 * 60_000;

export interface NoticeContext {
  settings: TenantSettings;
  clock?: Clock;
}

export type AppointmentChange = 'booked' | 'cancelled' | 'rescheduled';

export const JOB_KINDS = {
  confirmation: 'appointment.confirmation',
  cancellation: 'appointment.cancellation',
  reminder: 'appointment.reminder',
  waitlistOffer: 'waitlist.offer',
} as const;

interface AppointmentPayload {
  appointment: string;
  patient: string;
  /** The start the message is about (a job for another start is stale). */
  start?: string;
  change?: AppointmentChange;
  offsetMinutes?: number;
}

interface WaitlistPayload {
  patient: string;
  appointment?: string;
  slot?: string;
  claimUrl: string;
  expiresAt: string;
}

const idOf = (ref: string | undefined, type: string): string | undefined =>
  ref ? new RegExp(`(?:^|/)${type}/([A-Za-z0-9\\-.]{1,64})(?:/_history/[^/]+)?$`).exec(ref)?.[1] : undefined;

function participants(a: Appointment, type: string): string[] {
  const out: string[] = [];
  for (const p of a.participant ?? []) {
    if (p.status === 'declined') continue;
    const id = idOf(p.actor?.reference, type);
    if (id && !out.includes(id)) out.push(id);
  }
  return out;
}

/**
 * When each reminder goes out: start − offset; in quiet hours (practice time zone) it moves to
 * 30 minutes before that quiet window begins; if that is already past, to the end of the window
 * if that is still before the start. A reminder whose time has passed when the appointment is
 * booked is left out; two reminders never go out at the same time.
 */
export function reminderTimes(start: Date, now: Date, settings: TenantSettings): Array<{ offsetMinutes: number; at: Date }> {
  const offsets = settings.reminderOffsetsMinutes ?? DEFAULT_REMINDER_OFFSETS;
  const zone = isTimeZone(settings.timeZone) ? settings.timeZone : 'UTC';
  const quiet: QuietHours | undefined = settings.quietHours ?? undefined;
  const out: Array<{ offsetMinutes: number; at: Date }> = [];
  for (const offset of [...new Set(offsets)].filter((o) => Number.isFinite(o) && o > 0).sort((a, b) => b - a)) {
    let at = new Date(start.getTime() - offset * 60_000);
    const w = quiet ? quietWindow(at, quiet, zone) : undefined;
    if (w) {
      const before = new Date(w.start.getTime() - BEFORE_QUIET_MS);
      if (before > now) at = before;
      else if (w.end > now && w.end < start) at = w.end;
      else continue;
    }
    if (at <= now || at >= start) continue;
    if (out.some((r) => r.at.getTime() === at.getTime())) continue;
    out.push({ offsetMinutes: offset, at });
  }
  return out;
}

const startKey = (a: Appointment) => (a.start ? String(Date.parse(a.start)) : 'none');

/**
 * Enqueues (and retracts) the notification jobs of a change to an Appointment, in the caller's
 * transaction. Idempotent: planning the same change again enqueues nothing new.
 * - booked: confirmation + reminders;
 * - rescheduled: the pending reminders and confirmations of other start times are retracted, then
 *   confirmation (of the move) + reminders for the new start;
 * - cancelled: pending reminders and confirmations retracted, cancellation email.
 */
export async function planAppointmentNotices(
  tx: Tx,
  ctx: NoticeContext,
  appointment: Appointment,
  change: AppointmentChange,
  previous?: Appointment,
): Promise<{ enqueued: number; retracted: number }> {
  void previous; // the keys carry the start time, so the previous version is not needed (kept in the API)
  const id = appointment.id;
  if (!id) throw new Error('planAppointmentNotices needs a stored Appointment (with an id)');
  const now = (ctx.clock ?? systemClock).now();
  const patients = participants(appointment, 'Patient');
  const sk = startKey(appointment);
  let enqueued = 0;
  let retracted = 0;
  const add = async (kind: string, key: string, payload: AppointmentPayload, runAt: Date = now) => {
    if ((await enqueueJob(tx, { kind, key, payload, runAt })).created) enqueued++;
  };
  if (change === 'cancelled') {
    retracted += await retractJobs(tx, `appt:${id}:reminder:`);
    retracted += await retractJobs(tx, `appt:${id}:confirmation:`);
    for (const p of patients) {
      await add(JOB_KINDS.cancellation, `appt:${id}:cancellation:${sk}:${p}`, { appointment: id, patient: p, start: appointment.start });
    }
    return { enqueued, retracted };
  }
  if (!appointment.start) return { enqueued, retracted };
  const start = new Date(appointment.start);
  if (change === 'rescheduled') {
    retracted += await retractJobs(tx, `appt:${id}:reminder:`, { except: `appt:${id}:reminder:${sk}:` });
    retracted += await retractJobs(tx, `appt:${id}:confirmation:`, { except: `appt:${id}:confirmation:${sk}:` });
  }
  if (start <= now) return { enqueued, retracted };
  for (const p of patients) {
    await add(JOB_KINDS.confirmation, `appt:${id}:confirmation:${sk}:${p}`, { appointment: id, patient: p, start: appointment.start, change });
    for (const r of reminderTimes(start, now, ctx.settings)) {
      await add(JOB_KINDS.reminder, `appt:${id}:reminder:${sk}:${r.offsetMinutes}:${p}`, { appointment: id, patient: p, start: appointment.start, offsetMinutes: r.offsetMinutes }, r.at);
    }
  }
  return { enqueued, retracted };
}

/** Enqueues the email that offers a freed time to a waitlisted patient, with the link to claim it. */
export async function enqueueWaitlistOffer(
  tx: Tx,
  ctx: NoticeContext,
  offer: { patient: string; appointment?: string; slot?: string; claimUrl: string; expiresAt: Date; key?: string },
): Promise<{ id: string; created: boolean }> {
  if (!offer.appointment && !offer.slot) throw new Error('a waitlist offer is for an appointment or a slot');
  const what = offer.slot ? `slot:${offer.slot}` : `appt:${offer.appointment}`;
  const payload: WaitlistPayload = {
    patient: offer.patient,
    appointment: offer.appointment,
    slot: offer.slot,
    claimUrl: offer.claimUrl,
    expiresAt: offer.expiresAt.toISOString(),
  };
  return enqueueJob(tx, { kind: JOB_KINDS.waitlistOffer, key: offer.key ?? `waitlist:${what}:${offer.patient}`, payload, runAt: (ctx.clock ?? systemClock).now() });
}

// ---- the jobs --------------------------------------------------------------------------

async function load<T extends FhirResource>(tx: Tx, type: T['resourceType'], id: string | undefined): Promise<T | undefined> {
  if (!id) return undefined;
  const v = await store.read(tx, type, id);
  return v && !v.deleted && v.json ? (JSON.parse(v.json) as T) : undefined;
}

const TZ_EXTENSIONS = ['http://hl7.org/fhir/StructureDefinition/timezone', 'http://hl7.org/fhir/StructureDefinition/tz-code'];

/** The patient's time zone (extension timezone / tz-code, an IANA code), else the practice's, else UTC. */
export function patientZone(patient: Patient, settings: TenantSettings): string {
  const own = patient.extension?.find((e) => TZ_EXTENSIONS.includes(e.url))?.valueCode;
  if (isTimeZone(own)) return own;
  return isTimeZone(settings.timeZone) ? settings.timeZone : 'UTC';
}

export function emailOf(patient: Patient): string | undefined {
  const now = Date.now();
  const all = (patient.telecom ?? []).filter((t) => t.system === 'email' && t.value && !(t.period?.end && Date.parse(t.period.end) < now));
  all.sort((a, b) => (a.rank ?? 1e9) - (b.rank ?? 1e9));
  return all[0]?.value;
}

function personName(r: Practitioner | undefined): string | undefined {
  const n = r?.name?.[0];
  if (!n) return undefined;
  if (n.text) return n.text;
  return [...(n.prefix ?? []), ...(n.given ?? []), n.family].filter(Boolean).join(' ') || undefined;
}

function placeOf(l: Location | undefined): string | undefined {
  if (!l) return undefined;
  const a = l.address;
  const addr = a ? a.text ?? [...(a.line ?? []), [a.postalCode, a.city].filter(Boolean).join(' ')].filter(Boolean).join(', ') : '';
  return [l.name, addr].filter(Boolean).join(', ') || undefined;
}

const CATEGORY = 'http://terminology.hl7.org/CodeSystem/communication-category';
const MEDIUM_EMAIL = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationMode', code: 'EMAILWRIT', display: 'email' }] };

interface Message {
  subject: string;
  text: string;
  /** The short, non-clinical text kept in the Communication. */
  note: string;
  category: 'notification' | 'reminder';
}

/** Sends the message to the patient and records it as a Communication (in the job's transaction). */
async function deliver(job: Job<unknown>, ctx: JobContext, patient: Patient, to: string, about: string, m: Message): Promise<string> {
  const host = new URL(ctx.config.publicUrl).hostname || 'localhost';
  const sent = await ctx.mail.send({ tenant: ctx.tenant.id, to, subject: m.subject, text: m.text, kind: job.kind, messageId: `<job-${job.id}@${host}>` });
  const communication: Communication = {
    resourceType: 'Communication',
    identifier: [{ system: 'urn:fhir-practice-server:job', value: job.id }],
    status: 'completed',
    category: [{ coding: [{ system: CATEGORY, code: m.category }] }],
    medium: [MEDIUM_EMAIL],
    subject: { reference: `Patient/${patient.id}` },
    about: [{ reference: about }],
    sent: ctx.clock.now().toISOString(),
    recipient: [{ reference: `Patient/${patient.id}` }],
    payload: [{ contentString: m.note }],
  };
  await store.create(ctx.tx, communication, { baseUrl: ctx.tenant.baseUrl });
  return `sent (${sent.via})`;
}

function signature(ctx: JobContext): string {
  return `\n\n${ctx.tenant.name}\n(This message was sent automatically; please do not reply to it.)`;
}

async function appointmentJob(job: Job<AppointmentPayload>, ctx: JobContext): Promise<string> {
  const { tx } = ctx;
  const a = await load<Appointment>(tx, 'Appointment', job.payload.appointment);
  if (!a) return 'skipped: appointment gone';
  const cancel = job.kind === JOB_KINDS.cancellation;
  if (cancel ? a.status !== 'cancelled' : a.status !== 'booked') return `skipped: appointment is ${a.status}`;
  if (!cancel && Date.parse(a.start ?? '') !== Date.parse(job.payload.start ?? '')) return 'skipped: appointment moved';
  const patient = await load<Patient>(tx, 'Patient', job.payload.patient);
  if (!patient) return 'skipped: patient gone';
  const to = emailOf(patient);
  if (!to) return 'skipped: no email address';
  const practitioner = personName(await load<Practitioner>(tx, 'Practitioner', participants(a, 'Practitioner')[0]));
  const place = placeOf(await load<Location>(tx, 'Location', participants(a, 'Location')[0]));
  const zone = patientZone(patient, ctx.tenant.settings);
  const when = a.start ? formatInZone(new Date(a.start), zone) : 'the agreed time';
  const withWhom = practitioner ? ` with ${practitioner}` : '';
  const where = place ? `\nWhere: ${place}` : '';
  let m: Message;
  if (job.kind === JOB_KINDS.confirmation) {
    const moved = job.payload.change === 'rescheduled';
    m = {
      category: 'notification',
      subject: moved ? 'Your appointment has been moved' : 'Your appointment is confirmed',
      note: moved ? 'Appointment change confirmation sent by email.' : 'Appointment confirmation sent by email.',
      text:
        `Hello,\n\nYour appointment${withWhom} is ${moved ? 'now' : 'confirmed'}:\n\nWhen: ${when}${where}\n\n` +
        `Cancellation policy: ${ctx.tenant.settings.cancellationPolicy ?? DEFAULT_CANCELLATION_POLICY}` +
        signature(ctx),
    };
  } else if (job.kind === JOB_KINDS.reminder) {
    const mins = job.payload.offsetMinutes ?? 0;
    const ahead = mins % 1440 === 0 ? `${mins / 1440} day${mins === 1440 ? '' : 's'}` : mins % 60 === 0 ? `${mins / 60} hour${mins === 60 ? '' : 's'}` : `${mins} minutes`;
    m = {
      category: 'reminder',
      subject: 'Reminder: your appointment',
      note: `Appointment reminder (${ahead} ahead) sent by email.`,
      text: `Hello,\n\nA reminder of your appointment${withWhom}:\n\nWhen: ${when}${where}\n\nIf you cannot come, please tell us as soon as possible.` + signature(ctx),
    };
  } else {
    m = {
      category: 'notification',
      subject: 'Your appointment has been cancelled',
      note: 'Appointment cancellation sent by email.',
      text: `Hello,\n\nYour appointment${withWhom} on ${when} has been cancelled.${where ? `\n${where.trim()}` : ''}\n\nTo book another time, contact us or use the patient portal.` + signature(ctx),
    };
  }
  return deliver(job, ctx, patient, to, `Appointment/${a.id}`, m);
}

async function waitlistJob(job: Job<WaitlistPayload>, ctx: JobContext): Promise<string> {
  const { tx } = ctx;
  const p = job.payload;
  if (Date.parse(p.expiresAt) <= ctx.clock.now().getTime()) return 'skipped: offer expired';
  if (!p.claimUrl) return 'skipped: offer ended';
  const patient = await load<Patient>(tx, 'Patient', p.patient);
  if (!patient) return 'skipped: patient gone';
  const to = emailOf(patient);
  if (!to) return 'skipped: no email address';
  let start: string | undefined;
  let practitionerId: string | undefined;
  let locationId: string | undefined;
  let about: string;
  if (p.slot) {
    const slot = await load<Slot>(tx, 'Slot', p.slot);
    if (!slot) return 'skipped: slot gone';
    start = slot.start;
    about = `Slot/${slot.id}`;
    const schedule = await load<Schedule>(tx, 'Schedule', idOf(slot.schedule?.reference, 'Schedule'));
    for (const actor of schedule?.actor ?? []) {
      practitionerId ??= idOf(actor.reference, 'Practitioner');
      locationId ??= idOf(actor.reference, 'Location');
    }
  } else {
    const a = await load<Appointment>(tx, 'Appointment', p.appointment);
    if (!a) return 'skipped: appointment gone';
    start = a.start;
    about = `Appointment/${a.id}`;
    practitionerId = participants(a, 'Practitioner')[0];
    locationId = participants(a, 'Location')[0];
  }
  const practitioner = personName(await load<Practitioner>(tx, 'Practitioner', practitionerId));
  const place = placeOf(await load<Location>(tx, 'Location', locationId));
  const zone = patientZone(patient, ctx.tenant.settings);
  const m: Message = {
    category: 'notification',
    subject: 'An appointment time has become available',
    note: 'Waitlist offer sent by email.',
    text:
      `Hello,\n\nA time you are waiting for has become available${practitioner ? ` with ${practitioner}` : ''}:\n\n` +
      `When: ${start ? formatInZone(new Date(start), zone) : 'see the link'}${place ? `\nWhere: ${place}` : ''}\n\n` +
      `To take it, open this link before ${formatInZone(new Date(p.expiresAt), zone)}:\n${p.claimUrl}\n\n` +
      `If you do not, the time is offered to the next person on the waiting list.` +
      signature(ctx),
  };
  const note = await deliver(job, ctx, patient, to, about, m);
  // The link is the patient's credential: once sent, it is not kept in the job row.
  await tx.raw(`UPDATE jobs SET payload = (payload::jsonb - 'claimUrl')::json WHERE tenant_id = ? AND id = ?`, [tx.tenant, job.id]);
  return note;
}

defineJob(JOB_KINDS.confirmation, appointmentJob);
defineJob(JOB_KINDS.reminder, appointmentJob);
defineJob(JOB_KINDS.cancellation, appointmentJob);
defineJob(JOB_KINDS.waitlistOffer, waitlistJob);
