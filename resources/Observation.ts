import type { Observation } from 'fhir/r4';
import { defineResource, ruleIssue } from './module';

export default defineResource<Observation>({
  type: 'Observation',
  // obs-6: dataAbsentReason SHALL only be present if Observation.value[x] is not present
  rules: (o) => {
    const hasValue = Object.keys(o).some((k) => /^value[A-Z]/.test(k));
    return o.dataAbsentReason && hasValue
      ? [ruleIssue('Observation.dataAbsentReason', 'obs-6: dataAbsentReason is only allowed when there is no value[x]')]
      : [];
  },
});
