/**
 * Scheduling domain events, for what is built on top (waitlist auto-fill, email notifications):
 * handlers run INSIDE the transaction that books, cancels or moves the appointment, with that
 * transaction, so a subscriber can write its outbox rows atomically with the change. A handler
 * that throws rolls the whole write back (the caller gets the error as an OperationOutcome).
 */
import type { Appointment, Slot } from 'fhir/r4';
import type { Tx } from '../db/tenant-tx';
import type { TenantContext } from '../fhir/types';

export type SchedulingEvent =
  | { kind: 'booked'; appointment: Appointment; slots: Slot[] }
  /** appointment is null when the Appointment was deleted. */
  | { kind: 'cancelled'; appointmentId: string; appointment: Appointment | null; freedSlots: Slot[] }
  | {
      kind: 'rescheduled';
      appointment: Appointment;
      previous: { start?: string; end?: string; slotIds: string[] };
      freedSlots: Slot[];
      takenSlots: Slot[];
    }
  | { kind: 'slot-freed'; slot: Slot; appointmentId: string };

export interface SchedulingEventContext {
  tx: Tx;
  tenant: string;
  ctx: TenantContext;
}

export type SchedulingEventHandler = (event: SchedulingEvent, c: SchedulingEventContext) => Promise<void> | void;

const handlers: SchedulingEventHandler[] = [];

/** Subscribes; returns the function that unsubscribes. */
export function onSchedulingEvent(handler: SchedulingEventHandler): () => void {
  handlers.push(handler);
  return () => {
    const i = handlers.indexOf(handler);
    if (i >= 0) handlers.splice(i, 1);
  };
}

/** Runs every handler in subscription order, inside the caller's transaction. */
export async function emitSchedulingEvent(tx: Tx, ctx: TenantContext, event: SchedulingEvent): Promise<void> {
  for (const h of [...handlers]) await h(event, { tx, tenant: tx.tenant, ctx });
}
