import type { Encounter } from 'fhir/r4';
import { defineResource, startNotAfterEnd } from './module';

export default defineResource<Encounter>({
  type: 'Encounter',
  rules: (e) => startNotAfterEnd('Encounter', e.period?.start, e.period?.end, 'period'),
});
