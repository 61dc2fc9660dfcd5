/**
 * What each kind of user may do at most, whatever scopes their app was granted: a user/ scope is
 * cut down to the role's ceiling, and a patient user is confined to their own compartment.
 * The table is documented in docs/security.md.
 */
import type { Op } from './scopes';

export const ROLES = ['admin', 'practitioner', 'physician', 'nurse', 'patient'] as const;
export type Role = (typeof ROLES)[number];
export const isRole = (r: unknown): r is Role => typeof r === 'string' && (ROLES as readonly string[]).includes(r);

/** Types that hold no patient data and that patients may read (to find a practitioner, a slot). */
export const DIRECTORY_TYPES = new Set([
  'Practitioner', 'PractitionerRole', 'Organization', 'Location', 'HealthcareService', 'Schedule', 'Slot', 'Endpoint',
  'Medication', 'Substance', 'ValueSet', 'CodeSystem', 'ConceptMap', 'StructureDefinition', 'SearchParameter',
  'OperationDefinition', 'CapabilityStatement', 'Questionnaire', 'PlanDefinition', 'ActivityDefinition',
]);

/** Types only administrators see (the audit trail). */
export const ADMIN_TYPES = new Set(['AuditEvent']);

/** What a patient may write in their own compartment (booking, answering, messaging, own details). */
const PATIENT_WRITES: Record<string, Op[]> = {
  Patient: ['u'],
  Appointment: ['c', 'u'],
  QuestionnaireResponse: ['c', 'u'],
  Communication: ['c'],
};

/** The ceiling of a role for one type and interaction (before scopes and compartments). */
export function roleAllows(role: Role, type: string, op: Op): boolean {
  if (ADMIN_TYPES.has(type)) return role === 'admin' && (op === 'r' || op === 's');
  switch (role) {
    case 'admin':
    case 'practitioner':
    case 'physician':
      return true;
    case 'nurse':
      return op !== 'd';
    case 'patient':
      if (op === 'r' || op === 's') return true; // confined to the compartment / directory types elsewhere
      return PATIENT_WRITES[type]?.includes(op) ?? false;
  }
}
