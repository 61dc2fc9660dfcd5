/**
 * Appointment/$book (IHE ITI-117 / Argonaut), Appointment/{id}/$cancel and
 * Appointment/{id}/$reschedule. Each is one transaction; the Appointment write hook (bookings.ts)
 * takes and frees the Slots in it, so a slot taken in the meantime is a 409 and nothing is kept.
 */
import type { Appointment, AppointmentParticipant, Bundle, CodeableConcept } from 'fhir/r4';
import { AccessDenied, badRequest, FhirError, notFound, unprocessable } from '../fhir/errors';
import { assertNotHidden, assertWritable, permit } from '../fhir/authorize';
import { run, writeResponse } from '../fhir/interactions';
import { assertValid } from '../fhir/validate';
import { writes } from '../fhir/writes';
import type { FhirRequest, FhirResponse, TenantContext } from '../fhir/types';
import type { Tx } from '../db/tenant-tx';
import { store, WriteResult } from '../store/resource-store';
import { guarded, OCCUPYING, SLOT_TAKEN, slotIdsOf } from './bookings';
import { opInput, typedRef } from './params';
import { schedulingSettings, tooSoonMessage } from './settings';

function asAppointment(v: unknown, name: string): Appointment {
  if (!v || typeof v !== 'object' || (v as { resourceType?: string }).resourceType !== 'Appointment') {
    throw badRequest(`"${name}" must be an Appointment (a proposed Appointment from $find)`, [name]);
  }
  return v as Appointment;
}

export function assertLeadTime(ctx: TenantContext, start: string | undefined, now = Date.now()): void {
  const s = schedulingSettings(ctx.settings);
  if (start && Date.parse(start) < now + s.leadTimeMinutes * 60_000) throw unprocessable(tooSoonMessage(s), ['Appointment.start']);
}

/** The proposal as a booking: status booked, every participant accepted, the patient set. */
export function booking(ctx: TenantContext, proposed: Appointment, patientParam?: string, comment?: string): Appointment {
  if (!slotIdsOf(proposed).length) throw badRequest('$book needs an Appointment with its Slot(s) (Appointment.slot), as $find proposes it', ['Appointment.slot']);
  if (!proposed.start || !proposed.end) throw badRequest('$book needs an Appointment with start and end', ['Appointment.start']);
  let participants: AppointmentParticipant[] = (proposed.participant ?? []).map((p) => ({ ...p, status: 'accepted' as const }));
  const patients = participants.map((p) => p.actor?.reference ?? '').filter((r) => /(^|\/)Patient\//.test(r));
  const own = ctx.access?.isPatientUser ? `Patient/${ctx.access.patient}` : undefined;
  const wanted = own ?? patientParam ?? (patients.length ? typedRef('Patient', patients[0], 'Appointment.participant') : undefined);
  if (!wanted) throw badRequest('$book needs the patient (a Patient participant, or the patient-reference parameter)', ['patient-reference']);
  if (own && (patients.some((r) => typedRef('Patient', r, 'Appointment.participant') !== own) || (patientParam && patientParam !== own))) {
    throw AccessDenied.forbidden('A patient account may book appointments for itself only');
  }
  if (!patients.length) participants = [...participants, { actor: { reference: wanted }, required: 'required', status: 'accepted' }];
  const { id: _id, meta: _meta, ...rest } = proposed;
  void _id;
  void _meta;
  return {
    ...rest,
    resourceType: 'Appointment',
    status: 'booked',
    created: new Date().toISOString(),
    participant: participants,
    ...(comment ? { comment } : {}),
  } as Appointment;
}

/**
 * Before anything is written: lock the Slot rows (in id order) and check them. Concurrent bookings
 * of one Slot wait here, not after inserting their Appointment; when the first commits, the
 * others see its status (busy) and answer 409 at once. The hook and the constraints stay the rule.
 */
async function lockSlotsFree(tx: Tx, slotIds: string[], exceptAppointment?: string): Promise<void> {
  const r = await guarded(() =>
    tx.raw(`SELECT slot_id, status FROM sched_slot WHERE tenant_id = ? AND slot_id = ANY(?) ORDER BY slot_id FOR UPDATE`, [tx.tenant, slotIds]),
  );
  const rows = r.rows as Array<{ slot_id: string; status: string }>;
  if (rows.length !== slotIds.length) throw unprocessable('Appointment.slot names a Slot that is not known', ['Appointment.slot']);
  const held = exceptAppointment
    ? new Set(((await tx.raw(`SELECT slot_id FROM booked_slot WHERE tenant_id = ? AND appointment_id = ?`, [tx.tenant, exceptAppointment])).rows as Array<{ slot_id: string }>).map((x) => x.slot_id))
    : new Set<string>();
  for (const row of rows) {
    if (held.has(row.slot_id)) continue;
    if (row.status === 'busy' || row.status === 'busy-tentative') throw FhirError.of(409, 'conflict', SLOT_TAKEN);
    if (row.status !== 'free') throw FhirError.of(409, 'conflict', `Slot/${row.slot_id} is not available (${row.status})`);
  }
}

/**
 * The booking step of $book, in the caller's transaction: lock and check the Slots, then write
 * the Appointment (create, or `id`: turn an existing Appointment, such as a waitlist entry, into
 * the booking). The write hook (bookings.ts) takes the Slots under the database constraints and
 * emits the booked event; set ctx.operation so the confirmation email is planned (notices.ts).
 */
export async function bookInTransaction(tx: Tx, ctx: TenantContext, appt: Appointment, id?: string): Promise<WriteResult> {
  await lockSlotsFree(tx, slotIdsOf(appt));
  return id ? writes.update(tx, ctx, { ...appt, id }, id, { baseUrl: ctx.baseUrl }) : writes.create(tx, ctx, appt, { baseUrl: ctx.baseUrl });
}

function bundleOf(ctx: TenantContext, w: WriteResult): Bundle {
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    total: 1,
    entry: [{ fullUrl: `${ctx.baseUrl}/Appointment/${w.id}`, resource: w.resource!, search: { mode: 'match' } }],
  };
}

export async function bookOperation(ctx: TenantContext, req: FhirRequest): Promise<FhirResponse> {
  const p = opInput(req);
  const body = req.body as { resourceType?: string } | undefined;
  const proposedRaw = p.resource('appointment-resource', 'appt-resource') ?? (body?.resourceType === 'Appointment' ? body : undefined);
  const previous = p.string('cancelled-appt-id', 'cancelled-appointment-reference');
  if (!proposedRaw) throw badRequest('$book needs the Appointment to book (parameter "appointment-resource", or an Appointment as the body)', ['appointment-resource']);
  const proposed = asAppointment(proposedRaw, 'appointment-resource');
  if (previous) {
    const id = typedRef('Appointment', previous, 'cancelled-appt-id').slice('Appointment/'.length);
    return rescheduleTo(ctx, req, id, proposed);
  }
  const d = permit(ctx, 'Appointment', 'c');
  let patientParam = p.string('patient-reference', 'patient-id', 'patient');
  if (patientParam) patientParam = typedRef('Patient', patientParam, 'patient-reference');
  const appt = booking(ctx, proposed, patientParam, p.string('comment'));
  assertLeadTime(ctx, appt.start);
  assertValid(appt, 'Appointment');
  const w = await run(ctx, async (tx) => {
    const written = await bookInTransaction(tx, ctx, appt);
    await assertWritable(tx, ctx, 'Appointment', written.id, d);
    return written;
  });
  const res = writeResponse(req, ctx, w, 201, `Booked Appointment/${w.id}`);
  return { ...res, body: bundleOf(ctx, w), json: undefined };
}

async function current(tx: Tx, ctx: TenantContext, id: string, d: ReturnType<typeof permit>): Promise<Appointment> {
  await assertNotHidden(tx, ctx, 'Appointment', id, d);
  const v = await store.read(tx, 'Appointment', id);
  if (!v || v.deleted) throw notFound(`Appointment/${id} is not known`);
  return JSON.parse(v.json!) as Appointment;
}

/** Moves a booked Appointment to the proposal's time and Slots, in place (same id): one transaction. */
async function rescheduleTo(ctx: TenantContext, req: FhirRequest, id: string, proposed: Appointment): Promise<FhirResponse> {
  const d = permit(ctx, 'Appointment', 'u');
  if (!slotIdsOf(proposed).length || !proposed.start || !proposed.end) {
    throw badRequest('The new time must be a proposed Appointment from $find (start, end and its Slots)', ['appointment-resource']);
  }
  assertLeadTime(ctx, proposed.start);
  const w = await run(ctx, async (tx) => {
    const old = await current(tx, ctx, id, d);
    if (!OCCUPYING.has(old.status)) throw FhirError.of(409, 'conflict', `Appointment/${id} is ${old.status}; only a booked appointment can be rescheduled`);
    await lockSlotsFree(tx, slotIdsOf(proposed), id);
    const moved: Appointment = {
      ...old,
      start: proposed.start,
      end: proposed.end,
      minutesDuration: proposed.minutesDuration,
      slot: proposed.slot,
      ...(proposed.appointmentType ? { appointmentType: proposed.appointmentType } : {}),
    };
    if (moved.minutesDuration === undefined) delete moved.minutesDuration;
    assertValid(moved, 'Appointment');
    const written = await writes.update(tx, ctx, moved, id, { baseUrl: ctx.baseUrl });
    await assertWritable(tx, ctx, 'Appointment', id, d);
    return written;
  });
  const res = writeResponse(req, ctx, w, 200, `Rescheduled Appointment/${id}`);
  return { ...res, body: bundleOf(ctx, w), json: undefined };
}

export async function rescheduleOperation(ctx: TenantContext, req: FhirRequest, id: string): Promise<FhirResponse> {
  const p = opInput(req);
  const body = req.body as { resourceType?: string } | undefined;
  const proposed = p.resource('appointment-resource', 'appt-resource') ?? (body?.resourceType === 'Appointment' ? body : undefined);
  if (!proposed) throw badRequest('$reschedule needs the new time: a proposed Appointment from $find ("appointment-resource")', ['appointment-resource']);
  return rescheduleTo(ctx, req, id, asAppointment(proposed, 'appointment-resource'));
}

export async function cancelOperation(ctx: TenantContext, req: FhirRequest, id: string): Promise<FhirResponse> {
  const d = permit(ctx, 'Appointment', 'u');
  const p = opInput(req);
  const reason: CodeableConcept | undefined = p.concept('reason', 'cancelation-reason', 'cancellation-reason') as CodeableConcept | undefined;
  if (!reason && !ctx.access?.isPatientUser) throw badRequest('Give a reason for the cancellation (parameter "reason": valueString or valueCodeableConcept)', ['reason']);
  const w = await run(ctx, async (tx) => {
    const old = await current(tx, ctx, id, d);
    if (old.status === 'cancelled') throw FhirError.of(409, 'conflict', `Appointment/${id} is already cancelled`);
    if (!OCCUPYING.has(old.status) && old.status !== 'proposed' && old.status !== 'waitlist') {
      throw FhirError.of(409, 'conflict', `Appointment/${id} is ${old.status}; it cannot be cancelled`);
    }
    const cancelled: Appointment = { ...old, status: 'cancelled', ...(reason ? { cancelationReason: reason } : {}) };
    assertValid(cancelled, 'Appointment');
    const written = await writes.update(tx, ctx, cancelled, id, { baseUrl: ctx.baseUrl, method: 'PATCH' });
    await assertWritable(tx, ctx, 'Appointment', id, d);
    return written;
  });
  return writeResponse(req, ctx, w, 200, `Cancelled Appointment/${id}`);
}
