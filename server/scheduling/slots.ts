/**
 * Slots derived from a PractitionerRole's hours (rules.ts, availability.ts), for a rolling horizon
 * (tenant setting slotHorizonDays), kept in step whenever the role changes. Each role gets one
 * Schedule (actor: the role and its practitioner). Regeneration never touches a booked Slot:
 * blocked time turns free Slots into busy-unavailable ones, hours that shrink remove free Slots,
 * and an Appointment keeps its Slot whatever the hours say.
 *
 * sched_slot (migration 011) mirrors every Slot (also those written through the REST API) for
 * $find; the Slot module's write hook keeps it in step.
 */
import type { PractitionerRole, Schedule, Slot } from 'fhir/r4';
import { randomUUID } from 'node:crypto';
import type { Tx } from '../db/tenant-tx';
import { conflict, unprocessable } from '../fhir/errors';
import type { TenantContext } from '../fhir/types';
import { store } from '../store/resource-store';
import { slotIntervals } from './availability';
import { readRules, Rules } from './rules';
import { schedulingSettings } from './settings';

export interface SlotRow {
  slot_id: string;
  schedule_id: string;
  practitioner: string | null;
  start_at: Date;
  end_at: Date;
  status: string;
}

const ref = (r?: string) => (r ? r.replace(/^.*\/(?=[A-Za-z]+\/[^/]+$)/, '') : undefined);
const idOf = (reference: string | undefined, type: string) => {
  const m = new RegExp(`^${type}/([A-Za-z0-9\\-.]{1,64})$`).exec(ref(reference) ?? '');
  return m?.[1];
};

/** The practitioner a Schedule books: its Practitioner actor, or its generated role's practitioner. */
async function practitionerOfSchedule(tx: Tx, scheduleId: string): Promise<string | null> {
  const r = await tx.raw(
    `SELECT practitioner FROM sched_schedule WHERE tenant_id = ? AND schedule_id = ?
     UNION ALL
     SELECT 'Practitioner/' || target_id FROM idx_reference
      WHERE tenant_id = ? AND res_type = 'Schedule' AND res_id = ? AND param = 'actor' AND target_type = 'Practitioner'
     LIMIT 1`,
    [tx.tenant, scheduleId, tx.tenant, scheduleId],
  );
  return (r.rows[0] as { practitioner: string | null } | undefined)?.practitioner ?? null;
}

/** Slot write hook: the sched_slot row follows the Slot (a booked Slot cannot be deleted). */
export async function slotWritten(tx: Tx, slotId: string, slot: Slot | null): Promise<void> {
  if (!slot) {
    const b = await tx.raw(`SELECT appointment_id FROM booked_slot WHERE tenant_id = ? AND slot_id = ?`, [tx.tenant, slotId]);
    if (b.rows.length) throw conflict(`Slot/${slotId} is booked by Appointment/${b.rows[0].appointment_id}; cancel the appointment first`);
    await tx.raw(`DELETE FROM sched_slot WHERE tenant_id = ? AND slot_id = ?`, [tx.tenant, slotId]);
    return;
  }
  const scheduleId = idOf(slot.schedule?.reference, 'Schedule');
  if (!scheduleId) throw unprocessable('Slot.schedule must reference a Schedule of this server (Schedule/{id})', ['Slot.schedule']);
  const practitioner = await practitionerOfSchedule(tx, scheduleId);
  await tx.raw(
    `INSERT INTO sched_slot (tenant_id, slot_id, schedule_id, practitioner, start_at, end_at, status) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (tenant_id, slot_id) DO UPDATE SET schedule_id = EXCLUDED.schedule_id, practitioner = EXCLUDED.practitioner,
       start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at, status = EXCLUDED.status`,
    [tx.tenant, slotId, scheduleId, practitioner, new Date(slot.start), new Date(slot.end), slot.status],
  );
}

/** Sets a Slot's status (a new version of the Slot and its sched_slot row); returns the Slot. */
export async function setSlotStatus(tx: Tx, ctx: TenantContext, slotId: string, status: Slot['status'], projection = true): Promise<Slot | undefined> {
  const v = await store.read(tx, 'Slot', slotId);
  if (!v || v.deleted) return undefined;
  const slot = JSON.parse(v.json!) as Slot;
  if (slot.status === status) return slot;
  const w = await store.update(tx, { ...slot, status }, slotId, { baseUrl: ctx.baseUrl });
  if (projection) await tx.raw(`UPDATE sched_slot SET status = ? WHERE tenant_id = ? AND slot_id = ?`, [status, tx.tenant, slotId]);
  return w.resource as Slot;
}

export interface RegenerateResult {
  scheduleId: string;
  created: number;
  updated: number;
  removed: number;
  kept: number;
}

/**
 * Brings the Slots of a PractitionerRole's Schedule in step with its rules from now to the
 * horizon. `role` null (deleted or inactive): every free future Slot goes.
 */
export async function regenerateSlots(tx: Tx, ctx: TenantContext, roleId: string, role: PractitionerRole | null, now = new Date()): Promise<RegenerateResult | undefined> {
  const settings = schedulingSettings(ctx.settings);
  const existing = (await tx.raw(`SELECT schedule_id FROM sched_schedule WHERE tenant_id = ? AND role_id = ?`, [tx.tenant, roleId])).rows[0] as
    | { schedule_id: string }
    | undefined;
  const bookable = role && role.active !== false && (role.availableTime?.length ?? 0) > 0;
  if (!existing && !bookable) return undefined;
  const practitionerId = idOf(role?.practitioner?.reference, 'Practitioner');
  const practitioner = practitionerId ? `Practitioner/${practitionerId}` : null;
  const from = new Date(Math.floor(now.getTime() / 60_000) * 60_000);
  const to = new Date(from.getTime() + settings.horizonDays * 86_400_000);
  let rules: Rules | undefined;
  if (bookable) {
    const read = readRules(role!, settings.timeZone);
    if (read.issues.length) throw unprocessable(read.issues.map((i) => i.diagnostics).join('; '), ['PractitionerRole']);
    rules = read.rules;
  }

  let scheduleId = existing?.schedule_id;
  if (!scheduleId) {
    scheduleId = randomUUID();
    const schedule: Schedule = {
      resourceType: 'Schedule',
      active: true,
      actor: [{ reference: `PractitionerRole/${roleId}` }, ...(practitioner ? [{ reference: practitioner }] : [])],
      comment: 'Generated from the PractitionerRole\'s hours (availableTime); its Slots are kept in step automatically',
    };
    await store.create(tx, schedule, { baseUrl: ctx.baseUrl, id: scheduleId });
    await tx.raw(`INSERT INTO sched_schedule (tenant_id, schedule_id, role_id, practitioner, rules, horizon_end) VALUES (?, ?, ?, ?, ?::jsonb, ?)`, [
      tx.tenant, scheduleId, roleId, practitioner, JSON.stringify(rules ?? null), to,
    ]);
  } else {
    await tx.raw(`UPDATE sched_schedule SET practitioner = ?, rules = ?::jsonb, horizon_end = ? WHERE tenant_id = ? AND schedule_id = ?`, [
      practitioner, JSON.stringify(rules ?? null), bookable ? to : null, tx.tenant, scheduleId,
    ]);
  }

  const current = (
    await tx.raw(
      `SELECT s.slot_id, s.start_at, s.end_at, s.status, (b.slot_id IS NOT NULL) AS booked
         FROM sched_slot s LEFT JOIN booked_slot b ON b.tenant_id = s.tenant_id AND b.slot_id = s.slot_id
        WHERE s.tenant_id = ? AND s.schedule_id = ? AND s.start_at >= ? ORDER BY s.start_at`,
      [tx.tenant, scheduleId, from],
    )
  ).rows as Array<{ slot_id: string; start_at: Date; end_at: Date; status: string; booked: boolean }>;
  const wanted = rules ? slotIntervals(rules, from, to) : [];
  const key = (s: number | Date, e: number | Date) => `${new Date(s).getTime()}/${new Date(e).getTime()}`;
  const wantedByKey = new Map(wanted.map((w) => [key(w.start, w.end), w]));
  const kept: Array<[number, number]> = [];
  const result: RegenerateResult = { scheduleId, created: 0, updated: 0, removed: 0, kept: 0 };
  const have = new Set<string>();
  for (const c of current) {
    const k = key(c.start_at, c.end_at);
    const w = wantedByKey.get(k);
    const busy = c.booked || c.status === 'busy' || c.status === 'busy-tentative';
    if (busy) {
      // booked (or held): never touched, whatever the hours now say
      kept.push([new Date(c.start_at).getTime(), new Date(c.end_at).getTime()]);
      have.add(k);
      result.kept++;
    } else if (!w) {
      await store.delete(tx, 'Slot', c.slot_id);
      await tx.raw(`DELETE FROM sched_slot WHERE tenant_id = ? AND slot_id = ?`, [tx.tenant, c.slot_id]);
      result.removed++;
    } else {
      have.add(k);
      kept.push([new Date(c.start_at).getTime(), new Date(c.end_at).getTime()]);
      const status = w.blocked ? 'busy-unavailable' : 'free';
      if (c.status !== status) {
        await setSlotStatus(tx, ctx, c.slot_id, status);
        result.updated++;
      }
    }
  }
  const fresh = wanted.filter((w) => {
    if (have.has(key(w.start, w.end))) return false;
    const s = w.start.getTime();
    const e = w.end.getTime();
    return !kept.some(([ks, ke]) => ks < e && ke > s); // never a new Slot over a kept one
  });
  if (fresh.length) {
    const items = fresh.map((w) => ({
      id: randomUUID(),
      resource: {
        resourceType: 'Slot',
        schedule: { reference: `Schedule/${scheduleId}` },
        status: w.blocked ? 'busy-unavailable' : 'free',
        start: w.start.toISOString(),
        end: w.end.toISOString(),
      } as Slot,
    }));
    for (let i = 0; i < items.length; i += 1000) {
      const chunk = items.slice(i, i + 1000);
      await store.createMany(tx, chunk, { baseUrl: ctx.baseUrl });
      const rows = chunk.map((c) => {
        const s = c.resource as Slot;
        return { id: c.id, start: s.start, end: s.end, status: s.status };
      });
      await tx.raw(
        `INSERT INTO sched_slot (tenant_id, slot_id, schedule_id, practitioner, start_at, end_at, status)
         SELECT ?, r.id, ?, ?, r.start::timestamptz, r."end"::timestamptz, r.status
           FROM json_to_recordset(?::json) AS r(id text, start text, "end" text, status text)`,
        [tx.tenant, scheduleId, practitioner, JSON.stringify(rows)],
      );
    }
    result.created = fresh.length;
  }
  if (practitioner) await tx.raw(`UPDATE sched_slot SET practitioner = ? WHERE tenant_id = ? AND schedule_id = ? AND practitioner IS DISTINCT FROM ?`, [practitioner, tx.tenant, scheduleId, practitioner]);
  return result;
}

/** Every generated Schedule of the tenant, extended to the horizon (the daily job; $regenerate-slots). */
export async function regenerateAll(tx: Tx, ctx: TenantContext, now = new Date()): Promise<RegenerateResult[]> {
  const rows = (
    await tx.raw(
      `SELECT r.id, CASE WHEN r.deleted THEN NULL ELSE r.content::text END AS json FROM resources r
        WHERE r.tenant_id = ? AND r.res_type = 'PractitionerRole'
          AND (r.deleted = false OR EXISTS (SELECT 1 FROM sched_schedule s WHERE s.tenant_id = r.tenant_id AND s.role_id = r.id))
        ORDER BY r.id`,
      [tx.tenant],
    )
  ).rows as Array<{ id: string; json: string | null }>;
  const out: RegenerateResult[] = [];
  for (const r of rows) {
    const res = await regenerateSlots(tx, ctx, r.id, r.json ? JSON.parse(r.json) : null, now);
    if (res) out.push(res);
  }
  return out;
}
