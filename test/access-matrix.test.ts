/**
 * The access matrix, generated from the registry: every role × scope family × resource type ×
 * interaction × (own tenant, other tenant), through HTTP, against an expectation written here
 * independently of server/auth (from the SMART scope rules, the official Patient
 * CompartmentDefinition read from the HL7 package, and the role table of docs/security.md).
 *
 * "Allowed" means authorization let the request through: any answer but 401/403 (a read of an
 * unknown id is 404, an empty create is 422 or 201), or, for compartment-confined writes, the
 * compartment's own 403 ("outside the compartment"). "Denied" is the 403 of scopes and roles.
 */
import fs from 'node:fs';
import path from 'node:path';
import { registry } from '../resources';
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import type { Role } from '../server/auth/roles';

type Op = 'c' | 'r' | 'u' | 'd' | 's';
type Family = 'system' | 'user' | 'patient';
const OPS: Op[] = ['c', 'r', 'u', 'd', 's'];
const ROLES: Array<Role | 'none'> = ['none', 'admin', 'practitioner', 'physician', 'nurse', 'patient'];
const FAMILIES: Family[] = ['system', 'user', 'patient'];

const pkg = path.dirname(require.resolve('hl7.fhir.r4.examples/package.json'));
const compartmentDef = JSON.parse(fs.readFileSync(path.join(pkg, 'CompartmentDefinition-patient.json'), 'utf8')) as { resource: Array<{ code: string; param?: string[] }> };
const IN_COMPARTMENT = new Set(['Patient', ...compartmentDef.resource.filter((r) => r.param?.length).map((r) => r.code)]);
/** docs/security.md: what a patient may read outside the compartment (no patient data). */
const DIRECTORY = new Set([
  'Practitioner', 'PractitionerRole', 'Organization', 'Location', 'HealthcareService', 'Schedule', 'Slot', 'Endpoint',
  'Medication', 'Substance', 'ValueSet', 'CodeSystem', 'ConceptMap', 'StructureDefinition', 'SearchParameter',
  'OperationDefinition', 'CapabilityStatement', 'Questionnaire', 'PlanDefinition', 'ActivityDefinition',
]);
/** docs/security.md: what a patient user may write in their own compartment. */
const PATIENT_WRITES: Record<string, Op[]> = { Patient: ['u'], Appointment: ['c', 'u'], QuestionnaireResponse: ['c', 'u'], Communication: ['c'] };

function roleCeiling(role: Role, type: string, op: Op): boolean {
  if (type === 'AuditEvent') return role === 'admin' && (op === 'r' || op === 's');
  if (role === 'nurse') return op !== 'd';
  if (role === 'patient') return op === 'r' || op === 's' || (PATIENT_WRITES[type]?.includes(op) ?? false);
  return true;
}

/** 'allow' (unconfined), 'confined' (allowed inside the patient compartment), or 'deny'. */
function expected(role: Role | 'none', family: Family, type: string, op: Op): 'allow' | 'confined' | 'deny' {
  const confined = family === 'patient' || role === 'patient';
  if (family === 'system' && role !== 'none') return 'deny';
  if (family === 'user' && role === 'none') return 'deny';
  if (role !== 'none' && !roleCeiling(role, type, op)) return 'deny';
  if (!confined) return 'allow';
  if (type === 'AuditEvent') return 'deny';
  if (IN_COMPARTMENT.has(type)) return 'confined';
  return DIRECTORY.has(type) && (op === 'r' || op === 's') ? 'allow' : 'deny';
}

let s: TestServer;
let other: string;
const PATIENT_ID = 'matrix-patient';
beforeAll(async () => {
  s = await startTestServer();
  other = await s.newTenant();
});
afterAll(() => s.close());

async function request(client: Awaited<ReturnType<TestServer['as']>>, base: string, type: string, op: Op) {
  const id = 'matrix-none';
  switch (op) {
    case 'c':
      return client.post(`${base}/${type}`).set('Content-Type', FHIR_JSON).send({ resourceType: type });
    case 'r':
      return client.get(`${base}/${type}/${id}`);
    case 'u':
      return client.put(`${base}/${type}/${id}`).set('Content-Type', FHIR_JSON).send({ resourceType: type, id });
    case 'd':
      return client.delete(`${base}/${type}/${id}`);
    case 's':
      return client.get(`${base}/${type}?_count=1`);
  }
}

async function pool<T>(items: T[], n: number, fn: (t: T) => Promise<void>) {
  let i = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (i < items.length) await fn(items[i++]);
  }));
}

const types = [...registry.keys()].sort();

test(`access matrix: ${ROLES.length} roles × ${FAMILIES.length} scope families × ${types.length} types × ${OPS.length} interactions × 2 tenants`, async () => {
  const mismatches: string[] = [];
  let checked = 0;
  const counts = { allow: 0, confined: 0, deny: 0 };
  for (const role of ROLES) {
    for (const family of FAMILIES) {
      const who = role === 'none' ? {} : { role, sub: `u-${role}`, fhirUser: role === 'patient' ? `Patient/${PATIENT_ID}` : `Practitioner/p-${role}` };
      const scope = `${family}/*.cruds`;
      const patient = family === 'patient' || role === 'patient' ? { patient: PATIENT_ID } : {};
      const own = await s.as({ scope, ...who, ...patient });
      const foreign = await s.as({ tenant: other, scope, ...who, ...patient });
      const cases = types.flatMap((type) => OPS.map((op) => ({ type, op })));
      await pool(cases, 12, async ({ type, op }) => {
        const exp = expected(role, family, type, op);
        counts[exp]++;
        const r = await request(own, s.base, type, op);
        const diag: string = r.body?.issue?.[0]?.diagnostics ?? '';
        const label = `${role} ${scope} ${op} ${type}`;
        checked++;
        if (type === 'AuditEvent' && op !== 'r' && op !== 's') {
          // append-only for everyone: 405 before any scope is looked at
          if (r.status !== 405) mismatches.push(`${label}: expected 405, got ${r.status}`);
        } else if (exp === 'deny') {
          if (r.status !== 403 || /outside the compartment/.test(diag)) mismatches.push(`${label}: expected 403 (scopes/role), got ${r.status} ${diag}`);
        } else {
          const compartment403 = exp === 'confined' && r.status === 403 && /outside the compartment/.test(diag);
          if ((r.status === 403 && !compartment403) || r.status === 401 || r.status >= 500) mismatches.push(`${label}: expected allowed (${exp}), got ${r.status} ${diag}`);
        }
        // the same token's twin from another tenant is refused, whatever it may do at home
        const f = await request(foreign, s.base, type, op);
        checked++;
        if (f.status !== 403) mismatches.push(`${label} (other tenant's token): expected 403, got ${f.status}`);
      });
    }
  }
  expect(mismatches.slice(0, 30)).toEqual([]);
  expect(checked).toBe(ROLES.length * FAMILIES.length * types.length * OPS.length * 2);
  // the matrix is not trivially one-sided
  expect(counts.allow).toBeGreaterThan(1000);
  expect(counts.deny).toBeGreaterThan(1000);
  expect(counts.confined).toBeGreaterThan(500);
}, 600_000);
