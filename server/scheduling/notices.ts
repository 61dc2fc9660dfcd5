/**
 * Appointment emails (server/jobs/appointment-notices.ts) from the scheduling events: a booking,
 * move or cancellation made through the scheduling operations ($book, $cancel, $reschedule) plans
 * its confirmation/cancellation and reminders in the same transaction (outbox rows). Plain REST
 * writes of an Appointment plan nothing (docs/jobs.md, "Who triggers notices").
 */
import { planAppointmentNotices } from '../jobs/appointment-notices';
import { onSchedulingEvent } from './events';

onSchedulingEvent(async (e, { tx, ctx }) => {
  if (!ctx.operation) return;
  if (e.kind === 'booked') await planAppointmentNotices(tx, { settings: ctx.settings }, e.appointment, 'booked');
  else if (e.kind === 'rescheduled') await planAppointmentNotices(tx, { settings: ctx.settings }, e.appointment, 'rescheduled');
  else if (e.kind === 'cancelled' && e.appointment) await planAppointmentNotices(tx, { settings: ctx.settings }, e.appointment, 'cancelled');
});
