/** FHIR errors: every failure leaves the server as an OperationOutcome with a stable HTTP status. */
import type { OperationOutcome, OperationOutcomeIssue } from 'fhir/r4';

export type IssueCode = OperationOutcomeIssue['code'];

export class FhirError extends Error {
  constructor(
    public readonly status: number,
    public readonly issues: OperationOutcomeIssue[],
    public readonly headers: Record<string, string> = {},
  ) {
    super(issues.map((i) => i.diagnostics ?? i.details?.text ?? i.code).join('; '));
  }

  static of(status: number, code: IssueCode, message: string, expression?: string[]): FhirError {
    const issue: OperationOutcomeIssue = { severity: 'error', code, diagnostics: message };
    if (expression?.length) issue.expression = expression;
    return new FhirError(status, [issue]);
  }

  toOutcome(): OperationOutcome {
    return outcome(this.issues);
  }
}

export function outcome(issues: OperationOutcomeIssue[]): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: issues };
}

export function info(message: string): OperationOutcome {
  return outcome([{ severity: 'information', code: 'informational', diagnostics: message }]);
}

export const badRequest = (msg: string, expr?: string[]) => FhirError.of(400, 'invalid', msg, expr);
export const notFound = (msg: string) => FhirError.of(404, 'not-found', msg);
export const gone = (msg: string) => FhirError.of(410, 'deleted', msg);
export const conflict = (msg: string) => FhirError.of(409, 'conflict', msg);
export const preconditionFailed = (msg: string) => FhirError.of(412, 'conflict', msg);
export const unprocessable = (msg: string, expr?: string[]) => FhirError.of(422, 'processing', msg, expr);
export const notSupported = (status: number, msg: string) => FhirError.of(status, 'not-supported', msg);

/**
 * A request refused by authorization (403), or a resource hidden from it (reported as 404 so
 * that its existence is not confirmed). Both leave a security AuditEvent.
 */
export class AccessDenied extends FhirError {
  readonly security = true;
  static forbidden(message: string): AccessDenied {
    return new AccessDenied(403, [{ severity: 'error', code: 'forbidden', diagnostics: message }]);
  }
  static hidden(type: string, id: string): AccessDenied {
    return new AccessDenied(404, [{ severity: 'error', code: 'not-found', diagnostics: `${type}/${id} is not known` }]);
  }
}
