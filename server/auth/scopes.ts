/**
 * SMART on FHIR scopes, v1 (`patient/Observation.read`, `.write`, `.*`) and v2
 * (`patient/Observation.rs`, `user/*.cruds`, granular `patient/Observation.rs?category=laboratory`).
 * Scopes that are not resource scopes (openid, fhirUser, launch, offline_access, ...) are kept
 * as names and grant no data access by themselves.
 */
export type ScopeContext = 'patient' | 'user' | 'system';
export type Op = 'c' | 'r' | 'u' | 'd' | 's';
export const OPS: Op[] = ['c', 'r', 'u', 'd', 's'];

export interface ResourceScope {
  raw: string;
  context: ScopeContext;
  /** A resource type or '*'. */
  type: string;
  ops: ReadonlySet<Op>;
  /** v2 granular restriction: search parameters the resources must match (e.g. category=laboratory). */
  query?: Array<[string, string]>;
}

export interface ParsedScopes {
  resource: ResourceScope[];
  other: string[];
}

const V1 = /^(patient|user|system)\/([A-Z][A-Za-z]+|\*)\.(read|write|\*)$/;
const V2 = /^(patient|user|system)\/([A-Z][A-Za-z]+|\*)\.(c?r?u?d?s?)(\?.*)?$/;

export function parseScopes(scope: string): ParsedScopes {
  const out: ParsedScopes = { resource: [], other: [] };
  for (const raw of scope.split(/\s+/).filter(Boolean)) {
    const v1 = V1.exec(raw);
    if (v1) {
      const ops: Op[] = v1[3] === 'read' ? ['r', 's'] : v1[3] === 'write' ? ['c', 'u', 'd'] : OPS;
      out.resource.push({ raw, context: v1[1] as ScopeContext, type: v1[2], ops: new Set(ops) });
      continue;
    }
    const v2 = V2.exec(raw);
    if (v2 && v2[3]) {
      const query = v2[4] ? [...new URLSearchParams(v2[4].slice(1)).entries()] : undefined;
      out.resource.push({
        raw,
        context: v2[1] as ScopeContext,
        type: v2[2],
        ops: new Set(v2[3].split('') as Op[]),
        ...(query?.length ? { query } : {}),
      });
      continue;
    }
    out.other.push(raw);
  }
  return out;
}
