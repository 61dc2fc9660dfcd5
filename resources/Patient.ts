import type { Patient } from 'fhir/r4';
import { defineResource, ruleIssue } from './module';

export default defineResource<Patient>({
  type: 'Patient',
  rules: (p) => {
    const issues = [];
    if (p.birthDate && p.birthDate > new Date().toISOString().slice(0, 10)) {
      issues.push(ruleIssue('Patient.birthDate', `Patient.birthDate (${p.birthDate}) is in the future`));
    }
    if (typeof p.deceasedDateTime === 'string' && p.birthDate && p.deceasedDateTime.slice(0, 10) < p.birthDate) {
      issues.push(ruleIssue('Patient.deceasedDateTime', 'Patient.deceasedDateTime is before Patient.birthDate'));
    }
    return issues;
  },
});
