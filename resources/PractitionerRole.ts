import type { PractitionerRole } from 'fhir/r4';
import { defineResource, startNotAfterEnd } from './module';
import { readRules } from '../server/scheduling/rules';
import { regenerateSlots } from '../server/scheduling/slots';
import { practitionerRoleOperations } from '../server/scheduling/operations';

export default defineResource<PractitionerRole>({
  type: 'PractitionerRole',
  rules: (r) => [...startNotAfterEnd('PractitionerRole', r.period?.start, r.period?.end, 'period'), ...readRules(r).issues],
  get operations() {
    return practitionerRoleOperations;
  },
  // hours, appointment types or blocked time changed: the Schedule's Slots follow, in the same transaction
  onWrite: async (tx, ctx, change) => {
    await regenerateSlots(tx, ctx, change.id, change.resource);
  },
});
