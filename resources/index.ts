/**
 * The registry: every R4 resource type with its search parameters, interactions and operations.
 * Built from the official definitions (profiles/r4-registry.json, generated from the HL7 package),
 * plus the mission modules in this folder. The router, the search indexer and the
 * CapabilityStatement all read this one registry.
 */
import r4 from '../profiles/r4-registry.json';
import type { ResourceModule } from './module';
import AllergyIntolerance from './AllergyIntolerance';
import Appointment from './Appointment';
import AuditEvent from './AuditEvent';
import Binary from './Binary';
import Communication from './Communication';
import Composition from './Composition';
import DocumentReference from './DocumentReference';
import Encounter from './Encounter';
import Invoice from './Invoice';
import MedicationStatement from './MedicationStatement';
import Observation from './Observation';
import Organization from './Organization';
import Patient from './Patient';
import Practitioner from './Practitioner';
import PractitionerRole from './PractitionerRole';
import Schedule from './Schedule';
import Slot from './Slot';

const MODULES: ResourceModule[] = [
  AllergyIntolerance, Appointment, AuditEvent, Binary, Communication, Composition, DocumentReference,
  Encounter, Invoice, MedicationStatement, Observation, Organization, Patient, Practitioner,
  PractitionerRole, Schedule, Slot,
] as ResourceModule[];

export type SearchParamType = 'string' | 'token' | 'date' | 'reference' | 'number' | 'quantity' | 'uri' | 'composite' | 'special';

export interface SearchParamDef {
  code: string;
  type: SearchParamType;
  expression?: string;
  url: string;
  target?: string[];
  modifier?: string[];
  comparator?: string[];
  component?: Array<{ definition: string; expression: string }>;
}

export type Interaction =
  | 'read' | 'vread' | 'update' | 'patch' | 'delete' | 'history-instance' | 'history-type' | 'create' | 'search-type';

export interface OperationDef {
  name: string; // without $
  /** Where the operation can be invoked. */
  level: Array<'system' | 'type' | 'instance'>;
  /** Resource types it applies to; '*' for all. */
  types: string[] | '*';
  affectsState: boolean;
  definition: string;
}

export interface ResourceTypeDef {
  type: string;
  searchParams: Map<string, SearchParamDef>;
  summary: string[];
  /** Top-level elements with min >= 1 (kept by _elements and _summary=text). */
  mandatory: string[];
  interactions: Interaction[];
  /** Search parameters that place a resource of this type in a patient's compartment
   * (CompartmentDefinition-patient); undefined when the type is outside the compartment. */
  patientCompartment?: string[];
  module?: ResourceModule;
}

interface RawType {
  summary: string[];
  searchParams: SearchParamDef[];
  elements?: Array<{ path: string; min: number }>;
}

const ALL_INTERACTIONS: Interaction[] = [
  'read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type',
];

/** Operations every type (or the system) offers. Modules add their own later ($book, $ai-complete...). */
export const OPERATIONS: OperationDef[] = [
  { name: 'validate', level: ['type', 'instance'], types: '*', affectsState: false, definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' },
  { name: 'restore', level: ['instance'], types: '*', affectsState: true, definition: 'urn:fhir-practice-server:OperationDefinition/restore' },
  { name: 'calendar-token', level: ['instance'], types: ['Practitioner'], affectsState: true, definition: 'urn:fhir-practice-server:OperationDefinition/calendar-token' },
];

function buildRegistry(): Map<string, ResourceTypeDef> {
  const modules = new Map(MODULES.map((m) => [m.type as string, m]));
  const types = new Map<string, ResourceTypeDef>();
  const raw = (r4 as unknown as { types: Record<string, RawType> }).types;
  const compartment = (r4 as unknown as { compartments: { Patient: Record<string, string[]> } }).compartments.Patient;
  for (const [type, def] of Object.entries(raw)) {
    const module = modules.get(type);
    const forbidden = new Set(module?.forbid ?? []);
    types.set(type, {
      type,
      searchParams: new Map(def.searchParams.map((p) => [p.code, p])),
      summary: def.summary,
      mandatory: (def.elements ?? [])
        .filter((e) => e.min >= 1 && e.path.indexOf('.') === type.length && e.path.lastIndexOf('.') === type.length)
        .map((e) => e.path.slice(type.length + 1)),
      interactions: ALL_INTERACTIONS.filter((i) => !forbidden.has(i as never)),
      patientCompartment: type === 'Patient' ? ['_id', ...(compartment.Patient ?? [])] : compartment[type],
      module,
    });
  }
  for (const m of modules.keys()) {
    if (!types.has(m)) throw new Error(`Resource module ${m} has no R4 definition`);
  }
  return types;
}

export const registry = buildRegistry();

export function resourceType(type: string): ResourceTypeDef | undefined {
  return registry.get(type);
}

export function operationsFor(type: string, level: 'system' | 'type' | 'instance'): OperationDef[] {
  return OPERATIONS.filter((o) => o.level.includes(level) && (o.types === '*' || o.types.includes(type)));
}

export const MISSION_TYPES = MODULES.map((m) => m.type as string);
