/**
 * npx jest profiles --rootDir . --preset ts-jest
 */
import * as fs from 'fs';
import * as path from 'path';
import { isKnownResourceType, validateResource, warmUpValidator, ValidationIssue } from './validator';
import { reduceExpression, splitUnion } from './build-registry';

const FIXTURES = '/work/shared/fixtures/hl7-examples';

// The first schema compile takes a couple of seconds (whole R4 schema graph).
jest.setTimeout(60000);
beforeAll(() => warmUpValidator(['Patient']));

const errorsOf = (issues: ValidationIssue[]) => issues.filter((i) => i.severity === 'error');

describe('validateResource', () => {
  const patient = {
    resourceType: 'Patient',
    id: 'example-1',
    meta: { versionId: '1', lastUpdated: '2024-01-01T00:00:00Z' },
    active: true,
    name: [{ use: 'official', family: 'Chalmers', given: ['Peter', 'James'] }],
    gender: 'male',
    birthDate: '1974-12-25',
    _birthDate: { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: '1974-12-25T14:35:45-05:00' }] },
    deceasedBoolean: false,
    telecom: [{ system: 'phone', value: '(03) 5555 6473', use: 'work' }],
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Peter\u00a0Chalmers</div>' },
  };

  test('a valid Patient passes', () => {
    expect(validateResource(patient)).toEqual([]);
    expect(validateResource(patient, 'Patient')).toEqual([]);
  });

  test('all official HL7 example fixtures validate with zero errors', () => {
    const files = fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.json')).sort();
    expect(files).toHaveLength(137);
    const failures: Record<string, ValidationIssue[]> = {};
    for (const f of files) {
      const resource = JSON.parse(fs.readFileSync(path.join(FIXTURES, f), 'utf8'));
      const issues = validateResource(resource, f.split('-')[0]);
      if (issues.length) failures[f] = issues;
    }
    expect(failures).toEqual({});
  });

  test('unknown element', () => {
    const issues = validateResource({ ...patient, foo: 'bar' });
    expect(issues).toEqual([
      { severity: 'error', code: 'structure', diagnostics: 'Unknown element "foo"', expression: ['Patient.foo'] },
    ]);
    const nested = validateResource({ resourceType: 'Patient', name: [{ family: 'x', nickname: 'y' }] });
    expect(nested).toHaveLength(1);
    expect(nested[0].expression).toEqual(['Patient.name[0].nickname']);
  });

  test('bad date', () => {
    const issues = validateResource({ ...patient, birthDate: '1970-13-45' });
    expect(issues).toHaveLength(1);
    expect(issues[0].code).toBe('value');
    expect(issues[0].expression).toEqual(['Patient.birthDate']);
    expect(issues[0].diagnostics).toContain('Invalid value "1970-13-45" for Patient.birthDate: does not match the FHIR date format');
  });

  test('bad id', () => {
    for (const id of ['bad id!', 'x'.repeat(65), '']) {
      const issues = validateResource({ ...patient, id });
      expect(issues).toHaveLength(1);
      expect(issues[0].code).toBe('value');
      expect(issues[0].expression).toEqual(['Patient.id']);
      expect(issues[0].diagnostics).toContain('1-64 characters');
    }
    expect(validateResource({ ...patient, id: 'A-z.0' })).toEqual([]);
  });

  test('wrong type: string for boolean (one issue, not type + pattern)', () => {
    const issues = validateResource({ ...patient, active: 'true' });
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ code: 'value', expression: ['Patient.active'] });
    expect(issues[0].diagnostics).toMatch(/boolean/);
  });

  test('cardinality: array for a max=1 element and object for a repeating element', () => {
    const issues = validateResource({ resourceType: 'Patient', gender: ['male'], name: { family: 'x' } });
    expect(issues.map((i) => [i.code, i.expression[0]]).sort()).toEqual([
      ['structure', 'Patient.gender'],
      ['structure', 'Patient.name'],
    ]);
  });

  test('invalid code (enum)', () => {
    const issues = validateResource({ ...patient, gender: 'M' });
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ code: 'code-invalid', expression: ['Patient.gender'] });
  });

  const appointment = {
    resourceType: 'Appointment',
    status: 'booked',
    participant: [
      { actor: { reference: 'Patient/1' }, status: 'accepted' },
      { actor: { reference: 'Practitioner/2' }, status: 'accepted' },
    ],
  };

  test('missing Appointment.status → required', () => {
    const { status, ...rest } = appointment;
    void status;
    expect(validateResource(appointment)).toEqual([]);
    expect(validateResource(rest)).toEqual([
      {
        severity: 'error',
        code: 'required',
        diagnostics: 'Missing required element Appointment.status',
        expression: ['Appointment.status'],
      },
    ]);
  });

  test('a primitive given only as _x (extension) counts as present', () => {
    const { status, ...rest } = appointment;
    void status;
    const withExt = { ...rest, _status: { extension: [{ url: 'http://example.org/x', valueString: 'y' }] } };
    expect(validateResource(withExt)).toEqual([]);
  });

  test('missing Appointment.participant[1].status', () => {
    const a = { ...appointment, participant: [appointment.participant[0], { actor: { reference: 'Practitioner/2' } }] };
    expect(validateResource(a)).toEqual([
      {
        severity: 'error',
        code: 'required',
        diagnostics: 'Missing required element Appointment.participant[1].status',
        expression: ['Appointment.participant[1].status'],
      },
    ]);
  });

  test('missing complex required element is reported once (schema + registry overlap)', () => {
    const issues = validateResource({ resourceType: 'Appointment', status: 'booked' });
    expect(issues).toEqual([
      expect.objectContaining({ code: 'required', expression: ['Appointment.participant'] }),
    ]);
  });

  test('required choice element (MedicationStatement.medication[x])', () => {
    const ms = { resourceType: 'MedicationStatement', status: 'active', subject: { reference: 'Patient/1' } };
    const issues = validateResource(ms);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ code: 'required', expression: ['MedicationStatement.medication'] });
    expect(issues[0].diagnostics).toBe('Missing required element MedicationStatement.medication[x]');
    expect(validateResource({ ...ms, medicationCodeableConcept: { text: 'aspirin' } })).toEqual([]);
  });

  test('recursive elements (contentReference): Questionnaire.item.item.linkId', () => {
    const q = {
      resourceType: 'Questionnaire',
      status: 'draft',
      item: [{ linkId: '1', type: 'group', item: [{ type: 'string', text: 'no linkId' }] }],
    };
    const issues = validateResource(q);
    expect(issues.map((i) => i.expression[0])).toEqual(['Questionnaire.item[0].item[0].linkId']);
  });

  test('wrong resourceType vs expectedType', () => {
    const issues = validateResource(patient, 'Observation');
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ severity: 'error', code: 'invalid', expression: ['resourceType'] });
    expect(issues[0].diagnostics).toContain('Observation');
  });

  test('missing / unknown resourceType and non-objects', () => {
    expect(validateResource({ id: 'x' })).toEqual([expect.objectContaining({ code: 'invalid', expression: ['resourceType'] })]);
    expect(validateResource({ resourceType: 'HumanName' })).toEqual([expect.objectContaining({ code: 'invalid' })]);
    expect(validateResource({ resourceType: 'Foo' }, 'Foo')[0].code).toBe('invalid');
    expect(validateResource(null)).toHaveLength(1);
    expect(validateResource([patient])).toHaveLength(1);
    expect(validateResource('Patient')).toHaveLength(1);
  });

  test('a Bundle with entries validates; nested errors carry the full path', () => {
    const obs = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'Observation-example.json'), 'utf8'));
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a', resource: patient, request: { method: 'POST', url: 'Patient' } },
        { resource: obs, request: { method: 'PUT', url: 'Observation/example' } },
        { resource: appointment, request: { method: 'POST', url: 'Appointment' } },
        { request: { method: 'DELETE', url: 'Patient/old' } },
      ],
    };
    expect(validateResource(bundle)).toEqual([]);

    const bad = {
      ...bundle,
      entry: [
        { resource: { ...patient, birthDate: 'yesterday' }, request: { method: 'POST', url: 'Patient' } },
        { resource: { resourceType: 'Appointment', status: 'booked', participant: [{}] }, request: { method: 'POST', url: 'Appointment' } },
        { resource: { resourceType: 'NotAType' }, request: { method: 'POST' } },
      ],
    };
    const issues = validateResource(bad);
    expect(issues.map((i) => `${i.code} ${i.expression[0]}`).sort()).toEqual([
      'invalid Bundle.entry[2].resource.resourceType',
      'required Bundle.entry[1].resource.participant[0].status',
      'required Bundle.entry[2].request.url',
      'value Bundle.entry[0].resource.birthDate',
    ]);
  });

  test('contained resources are validated', () => {
    const issues = validateResource({ ...patient, contained: [{ resourceType: 'Observation', id: 'o1', code: { text: 'x' } }] });
    expect(issues).toEqual([expect.objectContaining({ code: 'required', expression: ['Patient.contained[0].status'] })]);
  });

  test('schema corrections: no-break space in strings, integers, 4.0.1, _canonical', () => {
    expect(validateResource({ resourceType: 'Patient', name: [{ text: 'Dr.\u00a0Who' }] })).toEqual([]);
    expect(validateResource({ resourceType: 'Patient', multipleBirthInteger: 2 })).toEqual([]);
    expect(validateResource({ resourceType: 'Patient', multipleBirthInteger: 1.5 })[0].code).toBe('value');
    expect(validateResource({ resourceType: 'Patient', name: [{ family: '' }] })[0].code).toBe('value');
    expect(validateResource({ resourceType: 'Patient', gender: ' male' })[0].code).toBe('code-invalid');
    const cs = {
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: '2024-01-01',
      kind: 'instance',
      fhirVersion: '4.0.1',
      format: ['json'],
      _implementationGuide: [{ extension: [{ url: 'http://example.org/x', valueBoolean: true }] }],
      implementationGuide: ['http://example.org/ig'],
    };
    expect(validateResource(cs)).toEqual([]);
  });

  test('never more than 20 issues', () => {
    const junk: Record<string, unknown> = { resourceType: 'Patient' };
    for (let i = 0; i < 100; i++) junk[`x${i}`] = i;
    const issues = validateResource(junk);
    expect(issues).toHaveLength(20);
    expect(errorsOf(issues)).toHaveLength(19);
    expect(issues[19].severity).toBe('warning');
  });

  test('isKnownResourceType', () => {
    expect(isKnownResourceType('Patient')).toBe(true);
    expect(isKnownResourceType('Bundle')).toBe(true);
    expect(isKnownResourceType('HumanName')).toBe(false);
    expect(isKnownResourceType('DomainResource')).toBe(false);
    expect(isKnownResourceType('patient')).toBe(false);
  });

  test('warmUpValidator compiles every type without throwing', () => {
    expect(() => warmUpValidator()).not.toThrow();
  });
});

describe('r4-registry.json', () => {
  const reg = JSON.parse(fs.readFileSync(path.join(__dirname, 'r4-registry.json'), 'utf8'));

  test('shape', () => {
    expect(reg.fhirVersion).toBe('4.0.1');
    const types = Object.keys(reg.types);
    expect(types.length).toBeGreaterThanOrEqual(145);
    expect(types).toEqual([...types].sort());
    const p = reg.types.Patient;
    expect(p.summary).toEqual(expect.arrayContaining(['id', 'meta', 'identifier', 'active', 'name', 'deceased[x]', 'birthDate']));
    expect(p.summary).not.toContain('contact');
    expect(reg.types.Appointment.elements).toContainEqual({ path: 'Appointment.participant.status', min: 1, max: '1', types: ['code'] });
    expect(reg.types.Appointment.summary).toContain('status'); // mandatory
  });

  test('search parameters', () => {
    const p = reg.types.Patient.searchParams;
    const family = p.find((s: { code: string }) => s.code === 'family');
    expect(family).toEqual({
      code: 'family',
      type: 'string',
      expression: 'Patient.name.family',
      url: 'http://hl7.org/fhir/SearchParameter/individual-family',
    });
    const codes = p.map((s: { code: string }) => s.code);
    expect(codes).toEqual([...codes].sort());
    for (const c of ['_id', '_lastUpdated', '_tag', '_profile', '_security', '_source', '_text', 'birthdate', 'identifier']) {
      expect(codes).toContain(c);
    }
    expect(p.find((s: { code: string }) => s.code === '_id').expression).toBe('Resource.id');
    const obsPatient = reg.types.Observation.searchParams.find((s: { code: string }) => s.code === 'patient');
    expect(obsPatient.expression).toBe('Observation.subject.where(resolve() is Patient)');
    // no empty arrays anywhere
    for (const t of Object.values(reg.types) as { searchParams: Record<string, unknown>[] }[]) {
      for (const sp of t.searchParams) {
        for (const v of Object.values(sp)) if (Array.isArray(v)) expect(v.length).toBeGreaterThan(0);
      }
    }
  });

  test('expression reduction helpers', () => {
    const types = new Set(['Patient', 'Practitioner', 'Observation', 'Resource', 'DomainResource']);
    expect(splitUnion("a.where(x = 'a|b') | (b | c) | d")).toEqual(["a.where(x = 'a|b')", '(b | c)', 'd']);
    expect(reduceExpression('Patient.name.family | Practitioner.name.family', 'Patient', types)).toBe('Patient.name.family');
    expect(reduceExpression('(Observation.value as Quantity) | (Practitioner.x as Y)', 'Observation', types)).toBe(
      '(Observation.value as Quantity)',
    );
    expect(reduceExpression('Resource.meta.tag', 'Patient', types)).toBe('Resource.meta.tag');
    expect(reduceExpression('value.as(Quantity) | Practitioner.x', 'Patient', types)).toBe('value.as(Quantity)');
    expect(reduceExpression('Practitioner.x', 'Patient', types)).toBe('');
  });

  test('complex elements must be objects (the schema gives them no type of their own)', () => {
    const meta = validateResource({ resourceType: 'Patient', meta: 'x' });
    expect(meta.map((i) => i.expression[0])).toEqual(['Patient.meta']);
    const nested = validateResource({ resourceType: 'Patient', extension: [[{ url: 'http://x' }]] });
    expect(nested.length).toBeGreaterThan(0);
    expect(validateResource({ resourceType: 'Patient', name: 'Smith' }).length).toBeGreaterThan(0);
  });
});
