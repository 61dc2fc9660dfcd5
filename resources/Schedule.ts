import type { Schedule } from 'fhir/r4';
import { defineResource, startNotAfterEnd } from './module';

export default defineResource<Schedule>({
  type: 'Schedule',
  rules: (s) => startNotAfterEnd('Schedule', s.planningHorizon?.start, s.planningHorizon?.end, 'planningHorizon'),
});
