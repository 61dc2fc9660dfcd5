/**
 * The authorization decision for one token: may it do interaction `op` on `type`, and if so,
 * on which resources (all of them, or only a patient's compartment / a granular scope's subset).
 * Pure: no database, no HTTP. server/fhir/authorize.ts applies the decisions to requests.
 */
import { registry } from '../../resources';
import { ADMIN_TYPES, DIRECTORY_TYPES, Role, roleAllows } from './roles';
import { Op, parseScopes, ParsedScopes, ResourceScope } from './scopes';
import type { AccessClaims } from './tokens';

/** One way a request may be allowed: only resources in a patient's compartment and/or matching a query. */
export interface Restriction {
  patient?: string;
  query?: Array<[string, string]>;
}

export type Decision =
  | { allow: false; reason: string }
  | { allow: true; all: true }
  | { allow: true; all: false; alternatives: Restriction[] };

export class Access {
  readonly scopes: ParsedScopes;
  readonly role?: Role;
  /** The patient whose compartment patient/ scopes (and a patient user) are confined to. */
  readonly patient?: string;
  /** The user's own FHIR resource (fhirUser claim), e.g. Practitioner/12. */
  readonly fhirUser?: string;

  constructor(readonly claims: AccessClaims) {
    this.scopes = parseScopes(claims.scope);
    this.role = claims.role;
    this.fhirUser = claims.fhirUser;
    const own = /^Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(claims.fhirUser ?? '')?.[1];
    // A patient user only ever reaches their own record, whatever launch context a token claims.
    this.patient = this.role === 'patient' ? own : claims.patient;
  }

  get isPatientUser(): boolean {
    return this.role === 'patient';
  }

  /** Who, for audit records. */
  get who() {
    return { sub: this.claims.sub, clientId: this.claims.client_id, fhirUser: this.fhirUser, role: this.role };
  }

  decide(type: string, op: Op): Decision {
    const alternatives: Restriction[] = [];
    let all = false;
    for (const s of this.scopes.resource) {
      if ((s.type !== '*' && s.type !== type) || !s.ops.has(op)) continue;
      const r = this.grant(s, type, op);
      if (!r) continue;
      if (!r.patient && !r.query) all = true;
      else alternatives.push(r);
    }
    if (all) return { allow: true, all: true };
    if (alternatives.length) return { allow: true, all: false, alternatives };
    return { allow: false, reason: this.denial(type, op) };
  }

  /** The restriction one scope gives for (type, op), or undefined if it gives nothing here. */
  private grant(s: ResourceScope, type: string, op: Op): Restriction | undefined {
    const query = s.query;
    const role = this.role;
    let patient: string | undefined;
    if (s.context === 'system') {
      if (role) return undefined; // system scopes belong to backend clients, not to users' apps
    } else if (s.context === 'user') {
      if (!role || !roleAllows(role, type, op)) return undefined;
      if (role === 'patient') {
        if (!this.patient) return undefined;
        patient = this.patient;
      }
    } else {
      if (!this.patient) return undefined; // patient/ scopes without a patient in context give nothing
      if (role && !roleAllows(role, type, op)) return undefined;
      if (ADMIN_TYPES.has(type)) return undefined;
      patient = this.patient;
    }
    if (patient) {
      const inCompartment = registry.get(type)?.patientCompartment;
      if (!inCompartment) {
        // Outside the patient compartment: only the directory (no patient data), read-only.
        if (DIRECTORY_TYPES.has(type) && (op === 'r' || op === 's')) return query ? { query } : {};
        return undefined;
      }
      if (ADMIN_TYPES.has(type)) return undefined;
      return query ? { patient, query } : { patient };
    }
    return query ? { query } : {};
  }

  private denial(type: string, op: Op): string {
    const verb = { c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' }[op];
    if (this.role === 'patient' && !['r', 's'].includes(op)) return `A patient account may not ${verb} ${type} resources`;
    if (this.role && !roleAllows(this.role, type, op)) return `The role "${this.role}" may not ${verb} ${type} resources`;
    return `The access token's scopes do not allow to ${verb} ${type} resources (granted: ${this.scopes.resource.map((s) => s.raw).join(' ') || 'none'})`;
  }
}
