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

export async function appointmentWritten(tx: Tx, ctx: TenantContext, id: string, a: Appointment | null): Promise<void> {
  const settings = schedulingSettings(ctx.settings);
  const active = !!a && OCCUPYING.has(a.status) && !!a.start && !!a.end;
  const newSlots = active ? slotIdsOf(a!) : [];
  const newActors = active ? practitionersOf(a!) : [];
  const start = active ? new Date(a!.start!) : undefined;
  const end = active ? new Date(a!.end!) : undefined;

  // what the Appointment held before this write
  const oldSlotRows = (await tx.raw(`DELETE FROM booked_slot WHERE tenant_id = ? AND appointment_id = ? RETURNING slot_id`, [tx.tenant, id])).rows as Array<{ slot_id: string }>;
  const oldTimeRows = (
    await tx.raw(`DELETE FROM booked_time WHERE tenant_id = ? AND appointment_id = ? RETURNING lower(period) AS s, upper(period) AS e`, [tx.tenant, id])
  ).rows as Array<{ s: Date; e: Date }>;
  const oldSlots = oldSlotRows.map((r) => r.slot_id);
  const oldSlotTimes = oldSlots.length
    ? ((await tx.raw(`SELECT min(start_at) AS s, max(end_at) AS e FROM sched_slot WHERE tenant_id = ? AND slot_id = ANY(?)`, [tx.tenant, oldSlots])).rows[0] as { s: Date | null; e: Date | null })
    : { s: null, e: null };
  const wasActive = oldSlots.length > 0 || oldTimeRows.length > 0;
  const oldStart = oldTimeRows[0]?.s ?? oldSlotTimes.s ?? undefined;
  const oldEnd = oldTimeRows[0]?.e ?? oldSlotTimes.e ?? undefined;

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
    if (taken.length) {
      // the Slot rows, locked: concurrent bookings of one Slot queue here, and every one after the first sees it taken
      const rows = (
        await guarded(() => tx.raw(`SELECT slot_id, start_at, end_at, status FROM sched_slot WHERE tenant_id = ? AND slot_id = ANY(?) FOR UPDATE`, [tx.tenant, taken]))
      ).rows as Array<{ slot_id: string; start_at: Date; end_at: Date; status: string }>;
      for (const sid of taken) {
        const r = rows.find((x) => x.slot_id === sid);
        if (!r) throw unprocessable(`Appointment.slot: Slot/${sid} is not known`, ['Appointment.slot']);
        if (r.status === 'busy' || r.status === 'busy-tentative') throw FhirError.of(409, 'conflict', SLOT_TAKEN);
        if (r.status !== 'free') throw FhirError.of(409, 'conflict', `Slot/${sid} is not available (${r.status})`);
      }
    }
    if (newSlots.length) {
      const span = (await tx.raw(`SELECT min(start_at) AS s, max(end_at) AS e, count(*)::int AS n FROM sched_slot WHERE tenant_id = ? AND slot_id = ANY(?)`, [tx.tenant, newSlots]))
        .rows[0] as { s: Date; e: Date; n: number };
      if (span.n === newSlots.length && (start!.getTime() < new Date(span.s).getTime() || end!.getTime() > new Date(span.e).getTime())) {
        throw unprocessable(`Appointment start/end (${a!.start} – ${a!.end}) must lie within its Slots (${new Date(span.s).toISOString()} – ${new Date(span.e).toISOString()})`, ['Appointment.start']);
      }
      await guarded(() =>
        tx.raw(`INSERT INTO booked_slot (tenant_id, slot_id, appointment_id) SELECT ?, s, ? FROM unnest(?::text[]) AS s`, [tx.tenant, id, newSlots]),
      );
    }
    if (newActors.length && start!.getTime() < end!.getTime()) {
      await guarded(() =>
        tx.raw(`INSERT INTO booked_time (tenant_id, appointment_id, actor, period) SELECT ?, ?, a, tstzrange(?, ?, '[)') FROM unnest(?::text[]) AS a`, [
          tx.tenant, id, start, end, newActors,
        ]),
      );
    }
    for (const sid of taken) {
      const s = await setSlotStatus(tx, ctx, sid, 'busy');
      if (s) takenSlots.push(s);
    }
  }
  const freedSlots: Slot[] = [];
  for (const sid of freed) {
    const s = await setSlotStatus(tx, ctx, sid, 'free');
    if (s) freedSlots.push(s);
  }

  if (!wasActive && active) await emitSchedulingEvent(tx, ctx, { kind: 'booked', appointment: a!, slots: takenSlots });
  else if (wasActive && !active) await emitSchedulingEvent(tx, ctx, { kind: 'cancelled', appointmentId: id, appointment: a, freedSlots });
  else if (moved) {
    const prev = { start: oldStart ? new Date(oldStart).toISOString() : undefined, end: oldEnd ? new Date(oldEnd).toISOString() : undefined, slotIds: oldSlots };
    await emitSchedulingEvent(tx, ctx, { kind: 'rescheduled', appointment: a!, previous: prev, freedSlots, takenSlots });
  }
  for (const slot of freedSlots) await emitSchedulingEvent(tx, ctx, { kind: 'slot-freed', slot, appointmentId: id });
}
