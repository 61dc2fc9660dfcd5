import type { Slot } from 'fhir/r4';
import { defineResource, ruleIssue } from './module';
import { slotWritten } from '../server/scheduling/slots';

export default defineResource<Slot>({
  type: 'Slot',
  rules: (s) =>
    Date.parse(s.start) >= Date.parse(s.end) ? [ruleIssue('Slot.end', `Slot.end (${s.end}) must be after Slot.start (${s.start})`)] : [],
  // sched_slot (what $find reads) follows every Slot write
  onWrite: (tx, _ctx, change) => slotWritten(tx, change.id, change.resource),
});
