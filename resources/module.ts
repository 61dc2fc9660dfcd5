/** What a resource module may add to the generic storage of its type. */
import type { FhirResource as Resource } from 'fhir/r4';
import type { ValidationIssue } from '../profiles/validator';
import type { Tx } from '../server/db/tenant-tx';
import type { FhirRequest, FhirResponse, TenantContext } from '../server/fhir/types';

/** One write of a resource, as a write hook sees it (inside the writing transaction). */
export interface WriteChange<R extends Resource = Resource> {
  type: string;
  id: string;
  interaction: 'create' | 'update' | 'patch' | 'delete' | 'restore';
  /** The stored version after the write (meta included); null for a deletion. */
  resource: R | null;
}

/**
 * Runs inside the transaction that writes the resource, after the resource rows are written and
 * before authorization's after-write check and the commit: whatever it writes commits or rolls
 * back with the resource, and a FhirError it throws becomes the answer (nothing is kept).
 * Called for every write path: create, update, patch, delete, conditional variants, $restore,
 * transaction and batch entries (server/fhir/writes.ts is the one place that calls it).
 */
export type WriteHook<R extends Resource = Resource> = (tx: Tx, ctx: TenantContext, change: WriteChange<R>) => Promise<void>;

/** An operation a module offers ($find, $book, ...), listed in the registry and the CapabilityStatement. */
export interface ModuleOperation {
  name: string; // without $
  level: Array<'type' | 'instance'>;
  affectsState: boolean;
  definition: string;
  /** `id` is set for an instance-level call. */
  handler: (ctx: TenantContext, req: FhirRequest, target: { type: string; id?: string }) => Promise<FhirResponse>;
}

export interface ResourceModule<R extends Resource = Resource> {
  type: R['resourceType'];
  /** Domain rules checked on every create/update after structural validation (-> 422). */
  rules?: (resource: R) => ValidationIssue[];
  /** Interactions this type refuses (e.g. AuditEvent will refuse update/delete). */
  forbid?: Array<'create' | 'update' | 'patch' | 'delete'>;
  /** Operations on this type. */
  operations?: ModuleOperation[];
  /** Keeps derived data in step with the type's writes, in the same transaction. */
  onWrite?: WriteHook<R>;
  /** When several resources are written by one statement (the plain creates of a transaction
   * Bundle), hooks run by ascending order (default 0), then in entry order: an Appointment (1)
   * after the Slots it references in the same Bundle. */
  hookOrder?: number;
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
