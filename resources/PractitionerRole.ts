import type { PractitionerRole } from 'fhir/r4';
import { defineResource, startNotAfterEnd } from './module';

export default defineResource<PractitionerRole>({
  type: 'PractitionerRole',
  rules: (r) => startNotAfterEnd('PractitionerRole', r.period?.start, r.period?.end, 'period'),
});
