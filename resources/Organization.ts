import type { Organization } from 'fhir/r4';
import { defineResource, ruleIssue } from './module';

export default defineResource<Organization>({
  type: 'Organization',
  // org-1: The organization SHALL at least have a name or an identifier, and possibly more than one
  rules: (o) =>
    o.name || o.identifier?.length ? [] : [ruleIssue('Organization', 'org-1: an Organization needs a name or an identifier')],
});
