/**
 * Appointment/$find (IHE ITI-115 shape, Argonaut names accepted): a searchset Bundle of proposed
 * Appointments built from genuinely free Slots — free status, not booked (booked_slot), no other
 * active appointment of the practitioner over it (booked_time), inside the hours and outside
 * blocked time of the practitioner's rules, and not sooner than the tenant's lead time.
 * One statement reads the candidate Slots (sched_slot, indexed by practitioner and start).
 */
import { randomUUID } from 'node:crypto';
import type { Appointment, Bundle, BundleEntry } from 'fhir/r4';
import { badRequest } from '../fhir/errors';
import { permit } from '../fhir/authorize';
import { run } from '../fhir/interactions';
import type { FhirRequest, FhirResponse, TenantContext } from '../fhir/types';
import { insideWindows, openWindows } from './availability';
import { instant, opInput, typedRef } from './params';
import { AppointmentType, matchesType, offeredTypes, Rules } from './rules';
import { schedulingSettings } from './settings';

const MAX_SPAN_DAYS = 93;
const DEFAULT_COUNT = 500;
const MAX_COUNT = 2000;

interface Candidate {
  slot_id: string;
  schedule_id: string;
  practitioner: string | null;
  start_at: Date;
  end_at: Date;
}

export interface FindQuery {
  start: Date;
  end: Date;
  practitioners: string[];
  types: string[];
  patient?: string;
  count: number;
}

export function parseFind(ctx: TenantContext, req: FhirRequest): FindQuery {
  const p = opInput(req);
  const start = instant('start', p.string('start'))!;
  const end = instant('end', p.string('end'))!;
  if (end.getTime() <= start.getTime()) throw badRequest('"end" must be after "start"', ['end']);
  if (end.getTime() - start.getTime() > MAX_SPAN_DAYS * 86_400_000) throw badRequest(`$find covers at most ${MAX_SPAN_DAYS} days per call`, ['end']);
  const practitioners = p.strings('practitioner', 'practitioner-reference').map((v) => typedRef('Practitioner', v, 'practitioner'));
  const types = p.strings('visit-type', 'appointment-type', 'service-type');
  let patient = p.string('patient-reference', 'patient', 'patient-id');
  if (patient) patient = typedRef('Patient', patient, 'patient');
  if (ctx.access?.isPatientUser) patient = `Patient/${ctx.access.patient}`;
  const c = p.string('_count');
  const count = c === undefined ? DEFAULT_COUNT : Number(c);
  if (!Number.isInteger(count) || count < 0) throw badRequest(`_count must be a non-negative integer, not "${c}"`, ['_count']);
  return { start, end, practitioners, types, patient, count: Math.min(count, MAX_COUNT) };
}

export async function findAppointments(ctx: TenantContext, q: FindQuery): Promise<{ total: number; proposals: Appointment[] }> {
  const settings = schedulingSettings(ctx.settings);
  const earliest = Date.now() + settings.leadTimeMinutes * 60_000;
  const from = new Date(Math.max(q.start.getTime(), earliest));
  if (from.getTime() >= q.end.getTime()) return { total: 0, proposals: [] };
  const { slots, rules } = await run(ctx, async (tx) => {
    const byPractitioner = q.practitioners.length ? 'AND s.practitioner = ANY(?)' : '';
    // read a day past `end` so that a longer appointment type may start just before `end`
    const r = await tx.raw(
      `SELECT s.slot_id, s.schedule_id, s.practitioner, s.start_at, s.end_at FROM sched_slot s
        WHERE s.tenant_id = ? AND s.status = 'free' AND s.start_at >= ? AND s.start_at < ? ${byPractitioner}
          AND NOT EXISTS (SELECT 1 FROM booked_slot b WHERE b.tenant_id = s.tenant_id AND b.slot_id = s.slot_id)
          AND NOT EXISTS (SELECT 1 FROM booked_time t WHERE t.tenant_id = s.tenant_id AND t.actor = s.practitioner
                             AND t.period && tstzrange(s.start_at, s.end_at, '[)'))
        ORDER BY s.schedule_id, s.start_at`,
      [tx.tenant, from, new Date(q.end.getTime() + 86_400_000), ...(q.practitioners.length ? [q.practitioners] : [])],
    );
    const slots = r.rows as Candidate[];
    const scheduleIds = [...new Set(slots.map((s) => s.schedule_id))];
    const rr = scheduleIds.length
      ? await tx.raw(`SELECT schedule_id, role_id, rules FROM sched_schedule WHERE tenant_id = ? AND schedule_id = ANY(?)`, [tx.tenant, scheduleIds])
      : { rows: [] };
    const rules = new Map<string, { roleId: string; rules: Rules | null }>();
    for (const row of rr.rows as Array<{ schedule_id: string; role_id: string; rules: Rules | string | null }>) {
      rules.set(row.schedule_id, { roleId: row.role_id, rules: typeof row.rules === 'string' ? JSON.parse(row.rules) : row.rules });
    }
    return { slots, rules };
  });

  const proposals: Array<{ at: number; a: Appointment }> = [];
  let i = 0;
  while (i < slots.length) {
    let j = i;
    while (j < slots.length && slots[j].schedule_id === slots[i].schedule_id) j++;
    const run_ = slots.slice(i, j);
    const sched = rules.get(slots[i].schedule_id);
    const r = sched?.rules ?? undefined;
    const firstLen = (new Date(run_[0].end_at).getTime() - new Date(run_[0].start_at).getTime()) / 60_000;
    let types: AppointmentType[] = offeredTypes(r, firstLen);
    if (q.types.length) types = types.filter((t) => q.types.some((tok) => matchesType(t, tok)));
    // adjacent windows (hours 09-12 and 12-17) are merged so that a proposal may span them
    const windows = r ? merge(openWindows(r, from, new Date(q.end.getTime() + 86_400_000))) : undefined;
    for (const t of types) propose(run_, t, r, windows, sched?.roleId, q, from, proposals);
    i = j;
  }
  proposals.sort((x, y) => x.at - y.at);
  return { total: proposals.length, proposals: proposals.slice(0, q.count).map((p) => p.a) };
}

function merge(w: Array<[number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const x of w) {
    const last = out[out.length - 1];
    if (last && x[0] <= last[1]) last[1] = Math.max(last[1], x[1]);
    else out.push([x[0], x[1]]);
  }
  return out;
}

function propose(
  slots: Candidate[],
  t: AppointmentType,
  rules: Rules | undefined,
  windows: Array<[number, number]> | undefined,
  roleId: string | undefined,
  q: FindQuery,
  from: Date,
  out: Array<{ at: number; a: Appointment }>,
): void {
  const ms = (d: Date) => new Date(d).getTime();
  for (let k = 0; k < slots.length; k++) {
    const first = slots[k];
    const at = ms(first.start_at);
    if (at < from.getTime() || at >= q.end.getTime()) continue;
    const need = (t.minutes + t.buffer) * 60_000;
    const taken = [first];
    let covered = ms(first.end_at) - at;
    for (let n = k + 1; covered < need && n < slots.length && ms(slots[n].start_at) === ms(taken[taken.length - 1].end_at); n++) {
      taken.push(slots[n]);
      covered = ms(slots[n].end_at) - at;
    }
    if (covered < need && rules) continue; // not enough contiguous free time for this type
    const endAt = rules ? at + t.minutes * 60_000 : ms(first.end_at);
    if (windows && !insideWindows(windows, at, Math.max(endAt, at + need))) continue;
    const minutes = Math.round((endAt - at) / 60_000);
    const a: Appointment = {
      resourceType: 'Appointment',
      status: 'proposed',
      ...(t.coding ? { appointmentType: { coding: [t.coding], ...(t.coding.display ? { text: t.coding.display } : {}) } } : {}),
      start: new Date(at).toISOString(),
      end: new Date(endAt).toISOString(),
      minutesDuration: minutes,
      slot: taken.map((s) => ({ reference: `Slot/${s.slot_id}` })),
      participant: [
        ...(first.practitioner ? [{ actor: { reference: first.practitioner }, required: 'required' as const, status: 'accepted' as const }] : []),
        ...(roleId ? [{ actor: { reference: `PractitionerRole/${roleId}` }, required: 'required' as const, status: 'accepted' as const }] : []),
        ...(q.patient ? [{ actor: { reference: q.patient }, required: 'required' as const, status: 'needs-action' as const }] : []),
      ],
    };
    out.push({ at, a });
  }
}

export async function findOperation(ctx: TenantContext, req: FhirRequest): Promise<FhirResponse> {
  permit(ctx, 'Slot', 's');
  const q = parseFind(ctx, req);
  const { total, proposals } = await findAppointments(ctx, q);
  const entry: BundleEntry[] = proposals.map((a) => ({ fullUrl: `urn:uuid:${randomUUID()}`, resource: a, search: { mode: 'match' } }));
  const bundle: Bundle = { resourceType: 'Bundle', type: 'searchset', total, ...(entry.length ? { entry } : {}) };
  return { status: 200, headers: {}, body: bundle };
}
