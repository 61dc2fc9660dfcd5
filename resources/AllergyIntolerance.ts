import type { AllergyIntolerance } from 'fhir/r4';
import { defineResource, ruleIssue } from './module';

export default defineResource<AllergyIntolerance>({
  type: 'AllergyIntolerance',
  rules: (a) => {
    const verification = a.verificationStatus?.coding?.some((c) => c.code === 'entered-in-error');
    // ait-1 / ait-2
    if (!verification && !a.clinicalStatus) {
      return [ruleIssue('AllergyIntolerance.clinicalStatus', 'ait-1: clinicalStatus is required unless verificationStatus is entered-in-error')];
    }
    if (verification && a.clinicalStatus) {
      return [ruleIssue('AllergyIntolerance.clinicalStatus', 'ait-2: clinicalStatus must be absent when verificationStatus is entered-in-error')];
    }
    return [];
  },
});
