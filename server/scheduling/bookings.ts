/**
 * The Appointment write hook: whatever path writes an Appointment (POST, PUT, PATCH, DELETE,
 * conditional, Bundle entry, $book, $cancel, $reschedule), this runs in the same transaction and
 *  - replaces the Appointment's rows in booked_slot (one Appointment per Slot: primary key) and
 *    booked_time (no overlapping active Appointments per practitioner: exclusion constraint), so
 *    the database refuses a double booking; the violation becomes a 409;
 *  - sets the Slots it takes to busy and those it leaves to free, at once;
 *  - applies the patient rules (book at least the lead time ahead; cancel or move at least
 *    patientCancelMinHours ahead) to patient users, on every path;
 *  - emits the scheduling events (events.ts) inside the transaction.
 */
import type { Appointment, Slot } from 'fhir/r4';
import type { Tx } from '../db/tenant-tx';
import { FhirError, unprocessable } from '../fhir/errors';
import type { TenantContext } from '../fhir/types';
import { emitSchedulingEvent } from './events';
import { setSlotStatus } from './slots';
import { isOpen } from './availability';
import type { Rules } from './rules';
import { schedulingSettings, tooSoonMessage } from './settings';

/** Statuses in which an Appointment holds its time and Slots. */
export const OCCUPYING = new Set(['pending', 'booked', 'arrived', 'fulfilled', 'checked-in']);

export const SLOT_TAKEN = 'This slot was just taken by another booking. Please choose another time.';

const localRef = (r?: string) => (r ? /([A-Za-z]+\/[A-Za-z0-9\-.]{1,64})$/.exec(r)?.[1] : undefined);

export function slotIdsOf(a: Appointment): string[] {
  const ids = (a.slot ?? []).map((s) => localRef(s.reference)).filter((r): r is string => !!r && r.startsWith('Slot/')).map((r) => r.slice(5));
  return [...new Set(ids)];
}

export function practitionersOf(a: Appointment): string[] {
  const refs = (a.participant ?? [])
    .filter((p) => p.status !== 'declined')
    .map((p) => localRef(p.actor?.reference))
    .filter((r): r is string => !!r && r.startsWith('Practitioner/'));
  return [...new Set(refs)];
}

/** A text[] from pg (an array) or PGlite (possibly the literal '{a,b}'). */
function pgArray(v: string[] | string | null): string[] {
  if (!v) return [];
  if (Array.isArray(v)) return v;
  return v.replace(/^\{|\}$/g, '').split(',').filter(Boolean).map((x) => x.replace(/^"|"$/g, ''));
}

function dbConflict(e: unknown): FhirError | undefined {
  const code = (e as { code?: string })?.code;
  if (code === '23505' || code === '40P01' || code === '40001') return FhirError.of(409, 'conflict', SLOT_TAKEN);
  if (code === '23P01') return FhirError.of(409, 'conflict', `${SLOT_TAKEN} (the practitioner already has an appointment at that time)`);
  return undefined;
}

/** Runs SQL that may violate a booking constraint: a violation becomes the 409 "slot was just taken". */
export async function guarded<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw dbConflict(e) ?? e;
  }
}

export function cancelTooLateMessage(ctx: TenantContext): string {
  const s = schedulingSettings(ctx.settings);
  return `Appointments can be cancelled or moved online up to ${s.patientCancelMinHours === 1 ? '1 hour' : `${s.patientCancelMinHours} hours`} ahead. Please call ${s.practicePhone ?? 'the practice'} to change this appointment.`;
}

export async function appointmentWritten(tx: Tx, ctx: TenantContext, id: string, a: Appointment | null, isNew = false): Promise<void> {
  const settings = schedulingSettings(ctx.settings);
  const active = !!a && OCCUPYING.has(a.status) && !!a.start && !!a.end;
  const newSlots = active ? slotIdsOf(a!) : [];
  const start = active ? new Date(a!.start!) : undefined;
  const end = active ? new Date(a!.end!) : undefined;
  const newActors = active && start!.getTime() < end!.getTime() ? practitionersOf(a!) : [];

  // what the Appointment held before this write (nothing when it is new): one statement
  let oldSlots: string[] = [];
  let oldStart: Date | undefined;
  let oldEnd: Date | undefined;
  let wasActive = false;
  if (!isNew) {
    const old = (
      await tx.raw(
        `WITH s AS (DELETE FROM booked_slot WHERE tenant_id = ? AND appointment_id = ? RETURNING slot_id),
              t AS (DELETE FROM booked_time WHERE tenant_id = ? AND appointment_id = ? RETURNING lower(period) AS s, upper(period) AS e)
         SELECT (SELECT array_agg(slot_id) FROM s) AS slots, (SELECT count(*) FROM t)::int AS times,
                COALESCE((SELECT min(t.s) FROM t), (SELECT min(x.start_at) FROM sched_slot x WHERE x.tenant_id = ? AND x.slot_id IN (SELECT slot_id FROM s))) AS s,
                COALESCE((SELECT max(t.e) FROM t), (SELECT max(x.end_at) FROM sched_slot x WHERE x.tenant_id = ? AND x.slot_id IN (SELECT slot_id FROM s))) AS e`,
        [tx.tenant, id, tx.tenant, id, tx.tenant, tx.tenant],
      )
    ).rows[0] as { slots: string[] | string | null; times: number; s: Date | null; e: Date | null };
    oldSlots = pgArray(old.slots);
    wasActive = oldSlots.length > 0 || old.times > 0;
    oldStart = old.s ?? undefined;
    oldEnd = old.e ?? undefined;
  }

  const freed = oldSlots.filter((s) => !newSlots.includes(s));
  const taken = newSlots.filter((s) => !oldSlots.includes(s));
  const moved =
    wasActive && active && (freed.length > 0 || taken.length > 0 || (oldStart && new Date(oldStart).getTime() !== start!.getTime()) || (oldEnd && new Date(oldEnd).getTime() !== end!.getTime()));

  if (ctx.access?.isPatientUser) {
    const now = Date.now();
    if (wasActive && (!active || moved) && oldStart && new Date(oldStart).getTime() < now + settings.patientCancelMinHours * 3_600_000) {
      throw unprocessable(cancelTooLateMessage(ctx));
    }
    if (active && (!wasActive || moved) && start!.getTime() < now + settings.leadTimeMinutes * 60_000) {
      throw unprocessable(tooSoonMessage(settings));
    }
  }

  const takenSlots: Slot[] = [];
  if (active) {
    // the Slot rows, locked: concurrent bookings of one Slot queue here, and every one after the
    // first sees it taken (the primary key of booked_slot stays the last word)
    const rows = newSlots.length
      ? ((
          await guarded(() =>
            tx.raw(`SELECT slot_id, start_at, end_at, status FROM sched_slot WHERE tenant_id = ? AND slot_id = ANY(?) ORDER BY slot_id FOR UPDATE`, [tx.tenant, newSlots]),
          )
        ).rows as Array<{ slot_id: string; start_at: Date; end_at: Date; status: string }>)
      : [];
    for (const sid of taken) {
      const r = rows.find((x) => x.slot_id === sid);
      if (!r) throw unprocessable(`Appointment.slot: Slot/${sid} is not known`, ['Appointment.slot']);
      if (r.status === 'busy' || r.status === 'busy-tentative') throw FhirError.of(409, 'conflict', SLOT_TAKEN);
      if (r.status !== 'free') throw FhirError.of(409, 'conflict', `Slot/${sid} is not available (${r.status})`);
    }
    if (rows.length === newSlots.length && rows.length) {
      const spans = rows.map((r) => [new Date(r.start_at).getTime(), new Date(r.end_at).getTime()]).sort((x, y) => x[0] - y[0]);
      if (spans.some((x, i) => i > 0 && x[0] !== spans[i - 1][1])) {
        throw unprocessable('Appointment.slot: the Slots of one appointment must follow each other without a gap', ['Appointment.slot']);
      }
      const s0 = spans[0][0];
      const e0 = spans[spans.length - 1][1];
      if (start!.getTime() < s0 || end!.getTime() > e0) {
        throw unprocessable(`Appointment start/end (${a!.start} – ${a!.end}) must lie within its Slots (${new Date(s0).toISOString()} – ${new Date(e0).toISOString()})`, ['Appointment.start']);
      }
    }
    if (newSlots.length || newActors.length) {
      // the booking rows and the taken Slots' status, in one statement; a constraint violation is the 409
      await guarded(() =>
        tx.raw(
          `WITH a AS (INSERT INTO booked_slot (tenant_id, slot_id, appointment_id) SELECT ?, x, ? FROM unnest(?::text[]) AS x),
                b AS (INSERT INTO booked_time (tenant_id, appointment_id, actor, period) SELECT ?, ?, x, tstzrange(?, ?, '[)') FROM unnest(?::text[]) AS x),
                c AS (UPDATE sched_slot SET status = 'busy' WHERE tenant_id = ? AND slot_id = ANY(?))
           SELECT 1`,
          [tx.tenant, id, newSlots, tx.tenant, id, start, end, newActors, tx.tenant, taken],
        ),
      );
    }
    for (const sid of taken) {
      const s = await setSlotStatus(tx, ctx, sid, 'busy', false);
      if (s) takenSlots.push(s);
    }
  }
  // A Slot left behind is free again, unless the hours changed while it was booked: then it is
  // outside them or in blocked time now, and becomes busy-unavailable (never offered, never freed).
  const freedSlots: Slot[] = [];
  if (freed.length) {
    const rows = (
      await tx.raw(
        `SELECT s.slot_id, s.start_at, s.end_at, sc.rules FROM sched_slot s
           LEFT JOIN sched_schedule sc ON sc.tenant_id = s.tenant_id AND sc.schedule_id = s.schedule_id
          WHERE s.tenant_id = ? AND s.slot_id = ANY(?) ORDER BY s.slot_id`,
        [tx.tenant, freed],
      )
    ).rows as Array<{ slot_id: string; start_at: Date; end_at: Date; rules: Rules | string | null }>;
    for (const r of rows) {
      const rules = typeof r.rules === 'string' ? (JSON.parse(r.rules) as Rules | null) : r.rules;
      const open = !rules || isOpen(rules, new Date(r.start_at), new Date(r.end_at));
      const slot = await setSlotStatus(tx, ctx, r.slot_id, open ? 'free' : 'busy-unavailable');
      if (slot && open) freedSlots.push(slot);
    }
  }

  if (!wasActive && active) await emitSchedulingEvent(tx, ctx, { kind: 'booked', appointment: a!, slots: takenSlots });
  else if (wasActive && !active) await emitSchedulingEvent(tx, ctx, { kind: 'cancelled', appointmentId: id, appointment: a, freedSlots });
  else if (moved) {
    const prev = { start: oldStart ? new Date(oldStart).toISOString() : undefined, end: oldEnd ? new Date(oldEnd).toISOString() : undefined, slotIds: oldSlots };
    await emitSchedulingEvent(tx, ctx, { kind: 'rescheduled', appointment: a!, previous: prev, freedSlots, takenSlots });
  }
  for (const slot of freedSlots) await emitSchedulingEvent(tx, ctx, { kind: 'slot-freed', slot, appointmentId: id });
}
