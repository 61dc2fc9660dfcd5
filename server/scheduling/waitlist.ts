/**
 * Waitlist auto-fill (docs/scheduling.md, "Waitlist"; IHE option A).
 *
 * An entry is an Appointment with status `waitlist`, `requestedPeriod`, a Patient participant and
 * optionally a Practitioner, `appointmentType`/`serviceType` and `priority`. It holds no time and
 * no Slot (bookings.ts ignores it). waitlist_entry (migration 012) mirrors the waiting entries for
 * matching, kept in step by the Appointment write hook (waitlistEntryWritten).
 *
 * When a Slot is freed (the `slot-freed` scheduling event, inside the cancelling transaction) the
 * earliest matching entry gets an offer: a waitlist_offers row, the Slot held (`busy-tentative`),
 * the email with the claim link and the expiry job, all in that transaction. An offer that expires
 * (job clock), or is withdrawn because its entry stopped waiting, releases the Slot to the next
 * entry; nobody left: the Slot is free again. Claiming (claim.ts) books the entry itself.
 */
import type { Appointment, Coding, Slot } from 'fhir/r4';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { DateTime } from 'luxon';
import type { Tx } from '../db/tenant-tx';
import { AccessDenied } from '../fhir/errors';
import type { TenantContext } from '../fhir/types';
import { writes } from '../fhir/writes';
import { enqueueWaitlistOffer } from '../jobs/appointment-notices';
import { defineJob, enqueueJob, JobContext, retractJobs } from '../jobs/outbox';
import { store } from '../store/resource-store';
import { isOpen } from './availability';
import { onSchedulingEvent } from './events';
import type { Rules } from './rules';
import { schedulingSettings } from './settings';
import { setSlotStatus } from './slots';

export const OFFER_EXPIRY_JOB = 'waitlist-offer-expiry';
export const ENTRY_END_JOB = 'waitlist-entry-end';
export const RANGE_ENDED = 'Waitlist range ended';
/** Priority absent or 0 ("undefined" in R4) sorts after 9 (lowest). */
const NO_PRIORITY = 10;

export const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
/** 256 random bits, base64url (43 characters). */
export const CLAIM_TOKEN = /^[A-Za-z0-9_-]{43}$/;

const nowOf = (ctx: TenantContext) => (ctx.clock ? ctx.clock.now() : new Date());

export function claimUrl(publicUrl: string, tenant: string, token: string): string {
  return `${publicUrl}/waitlist/${tenant}/offers/${token}`;
}

const refId = (ref: string | undefined, type: string) => (ref ? new RegExp(`(?:^|/)${type}/([A-Za-z0-9\\-.]{1,64})$`).exec(ref)?.[1] : undefined);

function participantIds(a: Appointment, type: string): string[] {
  return (a.participant ?? [])
    .filter((p) => p.status !== 'declined')
    .map((p) => refId(p.actor?.reference, type))
    .filter((x): x is string => !!x);
}

/** A requestedPeriod bound as an instant: a date (or year, year-month) without a time is taken in the practice's zone; an end date means through that day. */
export function boundOf(v: string | undefined, zone: string, isEnd: boolean): Date | undefined {
  if (!v) return undefined;
  if (v.includes('T')) {
    const t = Date.parse(v);
    return Number.isFinite(t) ? new Date(t) : undefined;
  }
  const d = DateTime.fromISO(v, { zone });
  if (!d.isValid) return undefined;
  const unit = v.length <= 4 ? 'years' : v.length <= 7 ? 'months' : 'days';
  return (isEnd ? d.plus({ [unit]: 1 }) : d).toJSDate();
}

export function entryPeriods(a: Appointment, zone: string): Array<{ start: Date; end: Date }> {
  const out: Array<{ start: Date; end: Date }> = [];
  for (const p of a.requestedPeriod ?? []) {
    const start = boundOf(p.start, zone, false);
    const end = boundOf(p.end, zone, true);
    if (start && end && start < end) out.push({ start, end });
  }
  return out;
}

const codingsOf = (a: { appointmentType?: { coding?: Coding[] }; serviceType?: Array<{ coding?: Coding[] }> }): Coding[] =>
  [...(a.appointmentType?.coding ?? []), ...(a.serviceType ?? []).flatMap((c) => c.coding ?? [])].filter((c) => !!c.code);

const sameCoding = (x: Coding, y: Coding) => x.code === y.code && (!x.system || !y.system || x.system === y.system);

// ---- entries --------------------------------------------------------------------------

/**
 * The Appointment write hook's waitlist part (after the booking part): the entry's rows in
 * waitlist_entry and its range-end job follow the Appointment; an entry that stops waiting
 * (cancelled, deleted, booked some other way) withdraws its open offer, and the held Slot passes on.
 */
export async function waitlistEntryWritten(tx: Tx, ctx: TenantContext, id: string, a: Appointment | null, isNew: boolean): Promise<void> {
  const now = nowOf(ctx);
  const waiting = !!a && a.status === 'waitlist';
  let before: { rank: number; queued_at: Date } | undefined;
  if (!isNew) {
    before = (await tx.raw(`DELETE FROM waitlist_entry WHERE tenant_id = ? AND entry_id = ? RETURNING rank, queued_at`, [tx.tenant, id])).rows[0] as
      | { rank: number; queued_at: Date }
      | undefined;
  }
  if (!waiting) {
    if (isNew) return;
    await retractJobs(tx, `waitlist:entry:${id}:end:`);
    const open = (await tx.raw(`SELECT id FROM waitlist_offers WHERE tenant_id = ? AND entry_id = ? AND status = 'open'`, [tx.tenant, id])).rows as Array<{ id: string }>;
    for (const o of open) await endOffer(tx, ctx, o.id, 'withdrawn', now);
    return;
  }
  const patients = participantIds(a!, 'Patient');
  const patient = patients[0];
  if (!patient) return; // the resource rules refuse this (422); nothing to match
  // A patient puts only themselves on the list: the offer email and the booking go to the entry's patient.
  if (ctx.access?.isPatientUser && patients.some((p) => p !== ctx.access!.patient)) {
    throw AccessDenied.forbidden('A patient account may put only itself on the waiting list');
  }
  const settings = schedulingSettings(ctx.settings);
  const periods = entryPeriods(a!, settings.timeZone);
  const practitioner = participantIds(a!, 'Practitioner')[0];
  // The queue order. A patient's own writes cannot move them up: their entry keeps the place it
  // got when first written, whatever `priority` or `created` they send; staff set both.
  const patientWrite = !!ctx.access?.isPatientUser;
  const p = a!.priority;
  const rank = patientWrite ? (before?.rank ?? NO_PRIORITY) : p && p >= 1 && p <= 9 ? p : NO_PRIORITY;
  const created = a!.created && Number.isFinite(Date.parse(a!.created)) ? new Date(a!.created) : undefined;
  const queuedAt = patientWrite ? (before?.queued_at ?? now) : (created ?? before?.queued_at ?? now);
  const types = JSON.stringify(codingsOf(a!).map((c) => ({ system: c.system, code: c.code })));
  let n = 0;
  for (const period of periods) {
    await tx.raw(
      `INSERT INTO waitlist_entry (tenant_id, entry_id, period_no, patient_id, practitioner, types, period_start, period_end, rank, queued_at)
       VALUES (?, ?, ?, ?, ?, ?::jsonb, ?, ?, ?, ?)`,
      [tx.tenant, id, n++, patient, practitioner ? `Practitioner/${practitioner}` : null, types, period.start, period.end, rank, queuedAt],
    );
  }
  // The job that ends the entry at the end of its (last) range; replaced when the range changes.
  const end = periods.length ? Math.max(...periods.map((x) => x.end.getTime())) : now.getTime();
  const key = `waitlist:entry:${id}:end:${end}`;
  await retractJobs(tx, `waitlist:entry:${id}:end:`, { except: key });
  await enqueueJob(tx, { kind: ENTRY_END_JOB, key, runAt: new Date(end), payload: { entry: id, end } });
}

// ---- offers ---------------------------------------------------------------------------

interface SlotInfo {
  slot_id: string;
  practitioner: string | null;
  start_at: Date;
  end_at: Date;
  status: string;
  booked: boolean;
  rules: Rules | string | null;
}

async function slotInfo(tx: Tx, slotId: string): Promise<SlotInfo | undefined> {
  return (
    await tx.raw(
      `SELECT s.slot_id, s.practitioner, s.start_at, s.end_at, s.status, sc.rules,
              EXISTS (SELECT 1 FROM booked_slot b WHERE b.tenant_id = s.tenant_id AND b.slot_id = s.slot_id) AS booked
         FROM sched_slot s LEFT JOIN sched_schedule sc ON sc.tenant_id = s.tenant_id AND sc.schedule_id = s.schedule_id
        WHERE s.tenant_id = ? AND s.slot_id = ? FOR UPDATE OF s`,
      [tx.tenant, slotId],
    )
  ).rows[0] as SlotInfo | undefined;
}

const rulesOf = (r: SlotInfo['rules']): Rules | null => (typeof r === 'string' ? (JSON.parse(r) as Rules | null) : r);

/**
 * The types a Slot can be booked for: its own appointmentType/serviceType; a Slot without any
 * (the generated ones) offers the types of its practitioner's hours, and any type when those name none.
 */
function typeMatches(wanted: Coding[], slot: Slot, rules: Rules | null): boolean {
  if (!wanted.length) return true;
  const own = codingsOf(slot);
  const offered = own.length ? own : (rules?.types ?? []).map((t) => t.coding).filter((c): c is Coding => !!c?.code);
  if (!offered.length) return true;
  return wanted.some((w) => offered.some((o) => sameCoding(w, o)));
}

export interface OfferMade {
  offerId: string;
  entryId: string;
  patientId: string;
  token: string;
  expiresAt: Date;
}

/**
 * Offers a free Slot to the earliest matching waiting entry, in the caller's transaction:
 * requestedPeriod contains the Slot, the range has not ended, the practitioner (if any) is the
 * Slot's, the type (if any) fits, the entry holds no other open offer and was never offered this
 * Slot, and the Slot starts at least the lead time from now. Order: priority (1 first, none last),
 * then queued time, then id. Returns the offer, or undefined (the Slot stays as it is).
 */
export async function offerSlot(tx: Tx, ctx: TenantContext, slotId: string, now = nowOf(ctx)): Promise<OfferMade | undefined> {
  const settings = schedulingSettings(ctx.settings);
  const info = await slotInfo(tx, slotId);
  if (!info || info.status !== 'free' || info.booked) return undefined;
  const start = new Date(info.start_at);
  const end = new Date(info.end_at);
  if (start.getTime() < now.getTime() + settings.leadTimeMinutes * 60_000) return undefined;
  const v = await store.read(tx, 'Slot', slotId);
  if (!v || v.deleted) return undefined;
  const slot = JSON.parse(v.json!) as Slot;
  const rules = rulesOf(info.rules);
  const candidates = (
    await tx.raw(
      `SELECT e.entry_id, e.patient_id, e.types FROM waitlist_entry e
        WHERE e.tenant_id = ? AND e.period_start <= ? AND e.period_end >= ? AND e.period_end > ?
          AND (e.practitioner IS NULL OR e.practitioner = ?)
          AND NOT EXISTS (SELECT 1 FROM waitlist_offers o WHERE o.tenant_id = e.tenant_id AND o.entry_id = e.entry_id AND (o.slot_id = ? OR o.status = 'open'))
        ORDER BY e.rank, e.queued_at, e.entry_id`,
      [tx.tenant, start, end, now, info.practitioner ?? '', slotId],
    )
  ).rows as Array<{ entry_id: string; patient_id: string; types: Coding[] | string }>;
  const expiresAt = new Date(now.getTime() + settings.waitlistOfferMinutes * 60_000);
  const seen = new Set<string>();
  for (const c of candidates) {
    if (seen.has(c.entry_id)) continue; // one row per requestedPeriod
    seen.add(c.entry_id);
    const types = typeof c.types === 'string' ? (JSON.parse(c.types) as Coding[]) : c.types;
    if (!typeMatches(types, slot, rules)) continue;
    // Lock the chosen entry: an entry being cancelled at this moment is skipped (its rows are
    // gone once we get the lock), or its cancellation waits for this offer and withdraws it.
    const still = await tx.raw(`SELECT 1 FROM waitlist_entry WHERE tenant_id = ? AND entry_id = ? FOR UPDATE`, [tx.tenant, c.entry_id]);
    if (!still.rows.length) continue;
    const token = randomBytes(32).toString('base64url');
    const offerId = randomUUID();
    // ON CONFLICT DO NOTHING: a concurrent transaction that offered this entry (or this Slot)
    // first wins; this one tries the next entry instead of failing the cancellation.
    const ins = await tx.raw(
      `INSERT INTO waitlist_offers (tenant_id, id, entry_id, slot_id, patient_id, token_hash, status, expires_at, created_at)
       VALUES (?, ?, ?, ?, ?, ?, 'open', ?, ?) ON CONFLICT DO NOTHING RETURNING id`,
      [tx.tenant, offerId, c.entry_id, slotId, c.patient_id, sha256(token), expiresAt, now],
    );
    if (!ins.rows.length) continue;
    await setSlotStatus(tx, ctx, slotId, 'busy-tentative');
    await enqueueWaitlistOffer(
      tx,
      { settings: ctx.settings, clock: { now: () => now } },
      { patient: c.patient_id, appointment: c.entry_id, slot: slotId, claimUrl: claimUrl(ctx.config.publicUrl, tx.tenant, token), expiresAt, key: `waitlist:offer:${offerId}:email` },
    );
    await enqueueJob(tx, { kind: OFFER_EXPIRY_JOB, key: `waitlist:offer:${offerId}:expiry`, runAt: expiresAt, payload: { offer: offerId } });
    return { offerId, entryId: c.entry_id, patientId: c.patient_id, token, expiresAt };
  }
  return undefined;
}

/**
 * Ends an offer (claimed, expired, withdrawn): its jobs are retracted and the claim link is
 * removed from the email job's payload. Unless claimed, the held Slot is released to the next entry.
 */
export async function endOffer(tx: Tx, ctx: TenantContext, offerId: string, status: 'claimed' | 'expired' | 'withdrawn', now = nowOf(ctx)): Promise<void> {
  const r = await tx.raw(
    `UPDATE waitlist_offers SET status = ?, decided_at = ? WHERE tenant_id = ? AND id = ? AND status = 'open' RETURNING slot_id`,
    [status, now, tx.tenant, offerId],
  );
  const slotId = (r.rows[0] as { slot_id: string } | undefined)?.slot_id;
  if (!slotId) return;
  await retractJobs(tx, `waitlist:offer:${offerId}:`);
  await scrubClaimUrl(tx, offerId);
  if (status !== 'claimed') await releaseSlot(tx, ctx, slotId, now);
}

/** The claim link lives in the email job's payload only until the email is sent or the offer ends. */
export async function scrubClaimUrl(tx: Tx, offerId: string): Promise<void> {
  await tx.raw(`UPDATE jobs SET payload = (payload::jsonb - 'claimUrl')::json WHERE tenant_id = ? AND key = ? AND (payload::jsonb ->> 'claimUrl') IS NOT NULL`, [
    tx.tenant,
    `waitlist:offer:${offerId}:email`,
  ]);
}

/** A held Slot is free again (or busy-unavailable if the hours changed meanwhile) and offered to the next entry. */
export async function releaseSlot(tx: Tx, ctx: TenantContext, slotId: string, now = nowOf(ctx)): Promise<OfferMade | undefined> {
  const info = await slotInfo(tx, slotId);
  if (!info || info.booked || info.status !== 'busy-tentative') return undefined;
  const rules = rulesOf(info.rules);
  const open = !rules || isOpen(rules, new Date(info.start_at), new Date(info.end_at));
  await setSlotStatus(tx, ctx, slotId, open ? 'free' : 'busy-unavailable');
  return open ? offerSlot(tx, ctx, slotId, now) : undefined;
}

// A freed Slot (cancel, reschedule, delete; any path) goes to the waitlist in the same transaction.
onSchedulingEvent(async (e, { tx, ctx }) => {
  if (e.kind === 'slot-freed' && e.slot.id) await offerSlot(tx, ctx, e.slot.id);
});

// ---- jobs -----------------------------------------------------------------------------

/** A TenantContext for the writes of a job (no caller: internal; the job clock is "now"). */
export function jobTenantContext(j: JobContext): TenantContext {
  return { tenant: j.tenant.id, baseUrl: j.tenant.baseUrl, config: j.config, db: j.db, settings: j.tenant.settings, tx: j.tx, clock: j.clock };
}

defineJob<{ offer: string }>(OFFER_EXPIRY_JOB, async (job, j) => {
  const now = j.clock.now();
  const o = (await j.tx.raw(`SELECT status, expires_at FROM waitlist_offers WHERE tenant_id = ? AND id = ? FOR UPDATE`, [j.tx.tenant, job.payload.offer])).rows[0] as
    | { status: string; expires_at: Date }
    | undefined;
  if (!o) return 'skipped: offer gone';
  if (o.status !== 'open') return `skipped: offer ${o.status}`;
  if (new Date(o.expires_at).getTime() > now.getTime()) throw new Error('offer not expired yet'); // retried later
  await endOffer(j.tx, jobTenantContext(j), job.payload.offer, 'expired', now);
  return 'expired';
});

defineJob<{ entry: string; end: number }>(ENTRY_END_JOB, async (job, j) => {
  const v = await store.read(j.tx, 'Appointment', job.payload.entry);
  if (!v || v.deleted) return 'skipped: entry gone';
  const a = JSON.parse(v.json!) as Appointment;
  if (a.status !== 'waitlist') return `skipped: entry is ${a.status}`;
  const ctx = jobTenantContext(j);
  const periods = entryPeriods(a, schedulingSettings(ctx.settings).timeZone);
  const end = periods.length ? Math.max(...periods.map((x) => x.end.getTime())) : 0;
  if (end > j.clock.now().getTime()) return 'skipped: range extended';
  await writes.update(j.tx, ctx, { ...a, status: 'cancelled', cancelationReason: { text: RANGE_ENDED } }, a.id!, { baseUrl: ctx.baseUrl });
  return 'cancelled';
});
