/**
 * Which FHIR requests leave an AuditEvent, and what it says. Every interaction on patient data
 * (Patient and every type of the Patient compartment, and requests across types: system search,
 * history, batch/transaction, operations) is recorded with its outcome, and every refusal by
 * authorization is recorded as a security event. Patients and entities are read off the request
 * and response texts (one regular-expression pass, no re-parsing).
 */
import type { AuditEvent } from 'fhir/r4';
import { registry } from '../../resources';
import type { Access } from '../auth/access';
import type { FhirRequest } from '../fhir/types';
import { AuditAction, toAuditEvent } from './event';
import { redactSecretQuery } from '../crypto/policy';

export interface Interaction {
  name: string;
  action: AuditAction;
  type?: string;
  id?: string;
}

/** The FHIR interaction of a request (the same dispatch as server/fhir/interactions.ts). */
export function interactionOf(req: FhirRequest): Interaction | undefined {
  const m = req.method === 'HEAD' ? 'GET' : req.method;
  const [a, b, c, d] = req.segments;
  const n = req.segments.length;
  if (n === 0) {
    if (m === 'GET') return { name: 'search-system', action: 'R' };
    if (m === 'POST') return { name: (req.body as { type?: string } | undefined)?.type === 'batch' ? 'batch' : 'transaction', action: 'E' };
    return undefined;
  }
  if (a === 'metadata' || a === '.well-known') return undefined;
  if (a === '_history') return { name: 'history-system', action: 'R' };
  if (a === '_search') return { name: 'search-system', action: 'R' };
  const type = a;
  if (n === 1) {
    const name = { GET: 'search-type', POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' }[m];
    const action = ({ GET: 'R', POST: 'C', PUT: 'U', PATCH: 'U', DELETE: 'D' } as const)[m];
    return name ? { name, action, type } : undefined;
  }
  if (n === 2) {
    if (b === '_search') return { name: 'search-type', action: 'R', type };
    if (b === '_history') return { name: 'history-type', action: 'R', type };
    if (b.startsWith('$')) return { name: `operation:${b}`, action: 'E', type };
    const name = { GET: 'read', POST: undefined, PUT: 'update', PATCH: 'patch', DELETE: 'delete' }[m];
    const action = ({ GET: 'R', POST: 'E', PUT: 'U', PATCH: 'U', DELETE: 'D' } as const)[m];
    return name ? { name, action, type, id: b } : undefined;
  }
  if (n === 3 && c === '_history') return { name: 'history-instance', action: 'R', type, id: b };
  if (n === 3 && c.startsWith('$')) return { name: `operation:${c}`, action: 'E', type, id: b };
  if (n === 4 && c === '_history') return { name: 'vread', action: 'R', type, id: b };
  return undefined;
}

/** True when the interaction may touch patient data. */
export function touchesPatientData(i: Interaction): boolean {
  if (!i.type) return true;
  return i.type === 'Patient' || !!registry.get(i.type)?.patientCompartment;
}

const PATIENT_REF = /"reference":"(?:[^"]*\/)?Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^"]*)?"/g;
/**
 * One pass over a response: patient references, Patient resources (the store writes
 * resourceType and id first), entry fullUrls and transaction-response locations.
 */
const RESPONSE = new RegExp(
  [
    '"reference":"(?:[^"]*\\/)?Patient\\/([A-Za-z0-9\\-.]{1,64})(?:\\/_history\\/[^"]*)?"',
    '"resourceType":"Patient","id":"([A-Za-z0-9\\-.]{1,64})"',
    '"(?:fullUrl|location)":"(?:[^"]*?\\/)?([A-Z][A-Za-z]+)\\/([A-Za-z0-9\\-.]{1,64})(?:\\/_history\\/[^"]*)?"',
  ].join('|'),
  'g',
);
const MAX_ENTITIES = 200;

function collect(re: RegExp, text: string | undefined, out: Set<string>, fmt: (m: RegExpExecArray) => string): void {
  if (!text) return;
  re.lastIndex = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) out.add(fmt(m));
}

export interface AuditInput {
  tenant: string;
  access?: Access;
  ip?: string;
  req: FhirRequest;
  /** The raw query string (?...) as sent, for searches and operations. */
  queryString?: string;
  status: number;
  /** Serialised response body, request body, Location header. */
  responseText?: string;
  /** The raw request body; read (as text) only for writes of patient data. */
  requestBody?: Buffer;
  location?: string;
  security: boolean;
  message?: string;
}

/** The AuditEvent for one FHIR request, or undefined when it needs none. */
export function auditEventFor(a: AuditInput): AuditEvent | undefined {
  const i = interactionOf(a.req);
  if (!a.security && (!i || !touchesPatientData(i))) return undefined;
  if (!a.security && a.status === 401) return undefined; // no identity to record; the sign-in side audits tokens
  const patients = new Set<string>();
  const entities = new Set<string>();
  if (a.access?.patient) patients.add(a.access.patient);
  if (i?.type && i.id) entities.add(`${i.type}/${i.id}`);
  if (i?.type === 'Patient' && i.id) patients.add(i.id);
  const ok = a.status < 400;
  if (ok) {
    if (a.responseText) {
      RESPONSE.lastIndex = 0;
      for (let m = RESPONSE.exec(a.responseText); m; m = RESPONSE.exec(a.responseText)) {
        if (m[1] ?? m[2]) patients.add((m[1] ?? m[2])!);
        else entities.add(`${m[3]}/${m[4]}`);
      }
    }
    if (a.location) collect(/\/([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})\/_history/g, a.location, entities, (m) => `${m[1]}/${m[2]}`);
  }
  if (i && ['C', 'U', 'E'].includes(i.action) && a.requestBody) collect(PATIENT_REF, a.requestBody.toString('utf8'), patients, (m) => m[1]);
  for (const e of entities) if (e.startsWith('Patient/')) patients.add(e.slice(8));
  const list = [...entities];
  const more = list.length > MAX_ENTITIES ? list.length - MAX_ENTITIES : 0;
  const who = a.access?.who ?? {};
  return toAuditEvent({
    tenant: a.tenant,
    action: i?.action ?? 'E',
    subtype: i?.name ?? 'unknown',
    kind: a.security ? 'security' : 'rest',
    status: a.status,
    outcomeText: [a.security || !ok ? a.message : undefined, more ? `${more} more entities not listed` : undefined].filter(Boolean).join('; ') || undefined,
    who,
    ip: a.ip,
    entities: list.slice(0, MAX_ENTITIES),
    patients: [...patients],
    query: a.queryString && a.queryString.length > 1 ? `${a.req.method} /${a.req.segments.join('/')}${redactSecretQuery(a.queryString)}` : undefined,
    recorded: new Date().toISOString(),
  });
}
