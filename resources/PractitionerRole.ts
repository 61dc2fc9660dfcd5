import type { PractitionerRole } from 'fhir/r4';
import { defineResource, startNotAfterEnd } from './module';
import { readRules } from '../server/scheduling/rules';
import { regenerateSlots } from '../server/scheduling/slots';
import { practitionerRoleOperations } from '../server/scheduling/operations';
import { ensureHorizonJob } from '../server/scheduling/horizon';

export default defineResource<PractitionerRole>({
  type: 'PractitionerRole',
  rules: (r) => [...startNotAfterEnd('PractitionerRole', r.period?.start, r.period?.end, 'period'), ...readRules(r).issues],
  get operations() {
    return practitionerRoleOperations;
  },
  // hours, appointment types or blocked time changed: the Schedule's Slots follow, in the same transaction
  onWrite: async (tx, ctx, change) => {
    const r = await regenerateSlots(tx, ctx, change.id, change.resource);
    // and keep them coming: the daily job that moves the horizon on (scheduling/horizon.ts)
    if (r && change.resource) await ensureHorizonJob(tx);
  },
});
