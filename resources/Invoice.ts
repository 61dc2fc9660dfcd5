import type { Invoice } from 'fhir/r4';
import { defineResource, ruleIssue } from './module';

export default defineResource<Invoice>({
  type: 'Invoice',
  rules: (inv) =>
    inv.status === 'cancelled' && !inv.cancelledReason
      ? [ruleIssue('Invoice.cancelledReason', 'A cancelled Invoice needs a cancelledReason')]
      : [],
});
