import type { Slot } from 'fhir/r4';
import { defineResource, ruleIssue } from './module';

export default defineResource<Slot>({
  type: 'Slot',
  rules: (s) =>
    Date.parse(s.start) >= Date.parse(s.end) ? [ruleIssue('Slot.end', `Slot.end (${s.end}) must be after Slot.start (${s.start})`)] : [],
});
