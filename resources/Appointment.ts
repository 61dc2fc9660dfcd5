import type { Appointment } from 'fhir/r4';
import { defineResource, ruleIssue, startNotAfterEnd } from './module';
import { appointmentWritten } from '../server/scheduling/bookings';
import { appointmentOperations } from '../server/scheduling/operations';
// waitlist auto-fill: subscribes to slot-freed and defines its jobs on import
import { waitlistEntryWritten } from '../server/scheduling/waitlist';

export default defineResource<Appointment>({
  type: 'Appointment',
  rules: (a) => {
    const issues = startNotAfterEnd('Appointment', a.start, a.end);
    // app-3: only proposed or cancelled appointments can be missing start/end dates
    if ((!a.start || !a.end) && !['proposed', 'cancelled', 'waitlist'].includes(a.status)) {
      issues.push(ruleIssue('Appointment.start', `app-3: an Appointment with status "${a.status}" needs start and end`));
    }
    // app-2: either start and end are specified, or neither
    if (Boolean(a.start) !== Boolean(a.end)) {
      issues.push(ruleIssue(a.start ? 'Appointment.end' : 'Appointment.start', 'app-2: give both start and end, or neither'));
    }
    // app-4: cancelationReason is only used for appointments that have been cancelled, or no-show
    if (a.cancelationReason && !['cancelled', 'noshow'].includes(a.status)) {
      issues.push(ruleIssue('Appointment.cancelationReason', 'app-4: cancelationReason is only allowed on cancelled or noshow appointments'));
    }
    // waitlist entries (docs/scheduling.md, "Waitlist"): the range and the patient are needed to match them
    if (a.status === 'waitlist') {
      if (!a.requestedPeriod?.length) {
        issues.push(ruleIssue('Appointment.requestedPeriod', 'A waitlist entry (status "waitlist") needs requestedPeriod: the date/time range the patient wants'));
      }
      (a.requestedPeriod ?? []).forEach((p, i) => {
        if (!p.start || !p.end) issues.push(ruleIssue(`Appointment.requestedPeriod[${i}]`, 'Each requestedPeriod of a waitlist entry needs a start and an end'));
        else if (Date.parse(p.start) >= Date.parse(p.end.length === 10 ? `${p.end}T23:59:59Z` : p.end)) issues.push(ruleIssue(`Appointment.requestedPeriod[${i}].end`, 'requestedPeriod.end must be after its start'));
      });
      if (!(a.participant ?? []).some((p) => /(^|\/)Patient\/[A-Za-z0-9\-.]{1,64}$/.test(p.actor?.reference ?? ''))) {
        issues.push(ruleIssue('Appointment.participant', 'A waitlist entry needs the patient as a participant (actor Patient/{id})'));
      }
    }
    return issues;
  },
  // $find, $book, $cancel, $reschedule (server/scheduling/)
  get operations() {
    return appointmentOperations;
  },
  // the booking tables, Slot status and scheduling events, in the writing transaction
  hookOrder: 1, // after the Slots a Bundle creates with it
  onWrite: async (tx, ctx, change) => {
    await appointmentWritten(tx, ctx, change.id, change.resource, change.interaction === 'create');
    await waitlistEntryWritten(tx, ctx, change.id, change.resource, change.interaction === 'create');
  },
});
