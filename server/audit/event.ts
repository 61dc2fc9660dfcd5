/**
 * What one audited interaction becomes: a FHIR R4 AuditEvent (DICOM event types, the FHIR
 * restful-interaction subtypes), with who (user and client), tenant, when, patient(s), action,
 * entity type and id, outcome and source IP.
 */
import type { AuditEvent, AuditEventEntity } from 'fhir/r4';

export type AuditAction = 'C' | 'R' | 'U' | 'D' | 'E';

export interface AuditRecord {
  tenant: string;
  action: AuditAction;
  /** FHIR restful interaction (read, vread, search-type, create, ...) or a security/sign-in event code. */
  subtype: string;
  /** 'rest' for data access, 'security' for refusals and tampering attempts, 'login' for sign-in events, 'admin' for administration (users, clients, identity provider, tenants, keys). */
  kind: 'rest' | 'security' | 'login' | 'admin';
  /** HTTP status of the answer. */
  status: number;
  outcomeText?: string;
  who: { sub?: string; clientId?: string; fhirUser?: string; role?: string };
  ip?: string;
  /** The resources touched (Type/id). */
  entities: string[];
  /** Patients whose data was touched (ids). */
  patients: string[];
  /** The search or operation query, as sent. */
  query?: string;
  recorded: string;
}

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const TYPES = {
  rest: { system: DCM, code: '110110', display: 'Patient Record' },
  security: { system: DCM, code: '110113', display: 'Security Alert' },
  login: { system: DCM, code: '110114', display: 'User Authentication' },
  admin: { system: DCM, code: '110100', display: 'Application Activity' },
};

/** FHIR AuditEvent.outcome: 0 success, 4 minor failure (client error), 8 serious failure (server error). */
export function outcomeOf(status: number): '0' | '4' | '8' {
  return status < 400 ? '0' : status < 500 ? '4' : '8';
}

export function toAuditEvent(r: AuditRecord): AuditEvent {
  const entity: AuditEventEntity[] = [];
  for (const p of r.patients) {
    entity.push({
      what: { reference: `Patient/${p}` },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
    });
  }
  for (const e of r.entities) {
    if (e.startsWith('Patient/') && r.patients.includes(e.slice(8))) continue;
    entity.push({ what: { reference: e }, type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2', display: 'System Object' } });
  }
  if (r.query) {
    entity.push({
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2', display: 'System Object' },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '24', display: 'Query' },
      query: Buffer.from(r.query).toString('base64'),
    });
  }
  const user = r.who.fhirUser
    ? { reference: r.who.fhirUser }
    : r.who.sub
      ? { identifier: { system: 'urn:fhir-practice-server:subject', value: r.who.sub } }
      : { display: 'anonymous' };
  const agent: AuditEvent['agent'] = [
    {
      who: user,
      requestor: true,
      ...(r.who.role ? { role: [{ text: r.who.role }] } : {}),
      ...(r.ip ? { network: { address: r.ip, type: '2' } } : {}), // 2 = IP address (IPv4 or IPv6)
    },
  ];
  if (r.who.clientId) {
    agent.push({
      type: { coding: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110150', display: 'Application' }] },
      who: { identifier: { system: 'urn:ietf:params:oauth:client-id', value: r.who.clientId } },
      requestor: false,
    });
  }
  return {
    resourceType: 'AuditEvent',
    type: TYPES[r.kind],
    subtype: [{ system: r.kind === 'rest' ? 'http://hl7.org/fhir/restful-interaction' : 'urn:fhir-practice-server:audit-subtype', code: r.subtype }],
    action: r.action,
    recorded: r.recorded,
    outcome: outcomeOf(r.status),
    ...(r.outcomeText ? { outcomeDesc: r.outcomeText } : {}),
    agent,
    source: {
      site: r.tenant,
      observer: { display: 'fhir-practice-server' },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4', display: 'Application Server' }],
    },
    ...(entity.length ? { entity } : {}),
  };
}
