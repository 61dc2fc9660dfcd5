import type { Appointment } from 'fhir/r4';
import { defineResource, ruleIssue, startNotAfterEnd } from './module';
import { appointmentWritten } from '../server/scheduling/bookings';
import { appointmentOperations } from '../server/scheduling/operations';

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
    return issues;
  },
  // $find, $book, $cancel, $reschedule (server/scheduling/)
  get operations() {
    return appointmentOperations;
  },
  // the booking tables, Slot status and scheduling events, in the writing transaction
  hookOrder: 1, // after the Slots a Bundle creates with it
  onWrite: (tx, ctx, change) => appointmentWritten(tx, ctx, change.id, change.resource, change.interaction === 'create'),
});
