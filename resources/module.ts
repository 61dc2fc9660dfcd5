/** What a resource module may add to the generic storage of its type. */
import type { FhirResource as Resource } from 'fhir/r4';
import type { ValidationIssue } from '../profiles/validator';

export interface ResourceModule<R extends Resource = Resource> {
  type: R['resourceType'];
  /** Domain rules checked on every create/update after structural validation (-> 422). */
  rules?: (resource: R) => ValidationIssue[];
  /** Interactions this type refuses (e.g. AuditEvent will refuse update/delete). */
  forbid?: Array<'create' | 'update' | 'patch' | 'delete'>;
}

export function defineResource<R extends Resource>(m: ResourceModule<R>): ResourceModule<R> {
  return m;
}

export function ruleIssue(expression: string, diagnostics: string): ValidationIssue {
  return { severity: 'error', code: 'invariant' as ValidationIssue['code'], diagnostics, expression: [expression] };
}

/** start must not be after end (FHIR invariants app-4, slot start/end, per-1). */
export function startNotAfterEnd(type: string, start?: string, end?: string, path = ''): ValidationIssue[] {
  if (start && end && Date.parse(start) > Date.parse(end)) {
    const p = path ? `${type}.${path}` : type;
    return [ruleIssue(`${p}.end`, `${p}.start (${start}) must not be after ${p}.end (${end})`)];
  }
  return [];
}
