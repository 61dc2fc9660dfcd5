/** Structural validation (profiles/validator) plus the resource module's own rules. */
import type { OperationOutcomeIssue, FhirResource as Resource } from 'fhir/r4';
import { registry } from '../../resources';
import { validateResource, ValidationIssue } from '../../profiles/validator';
import { FhirError } from './errors';

export function issuesOf(resource: unknown, expectedType?: string): ValidationIssue[] {
  const issues = validateResource(resource, expectedType);
  if (issues.some((i) => i.severity === 'error')) return issues;
  const mod = registry.get((resource as Resource).resourceType)?.module;
  return [...issues, ...(mod?.rules?.(resource as Resource) ?? [])];
}

export function toOutcomeIssues(issues: ValidationIssue[]): OperationOutcomeIssue[] {
  return issues.map((i) => ({
    severity: i.severity,
    code: i.code as OperationOutcomeIssue['code'],
    diagnostics: i.diagnostics,
    ...(i.expression?.length ? { expression: i.expression } : {}),
  }));
}

/** Throws 422 with every issue when the resource is not valid for `expectedType`. */
export function assertValid(resource: unknown, expectedType?: string): Resource {
  if (typeof resource !== 'object' || resource === null || Array.isArray(resource)) {
    throw FhirError.of(400, 'structure', 'The body must be a JSON object holding a FHIR resource');
  }
  const issues = issuesOf(resource, expectedType);
  const errors = issues.filter((i) => i.severity === 'error');
  if (errors.length) throw new FhirError(422, toOutcomeIssues(errors));
  return resource as Resource;
}
