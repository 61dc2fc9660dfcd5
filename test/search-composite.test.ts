/** Composite search parameters, token :of-type, and token :in / :not-in with local value sets. */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { create, expectOutcome, matchIds } from './rest-util';

let s: TestServer;
const ids: Record<string, string> = {};
const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';
const V2 = 'http://terminology.hl7.org/CodeSystem/v2-0203';
const mmHg = (value: number) => ({ value, unit: 'mmHg', system: UCUM, code: 'mm[Hg]' });
const loinc = (code: string) => ({ coding: [{ system: LOINC, code }] });

beforeAll(async () => {
  s = await startTestServer();
  const obs = async (name: string, body: Record<string, unknown>) => {
    ids[name] = (await create(s, { resourceType: 'Observation', status: 'final', ...body })).id;
  };
  // Blood pressure panels: systolic and diastolic in components.
  await obs('bpHigh', {
    code: loinc('85354-9'),
    component: [
      { code: loinc('8480-6'), valueQuantity: mmHg(150) },
      { code: loinc('8462-4'), valueQuantity: mmHg(70) },
    ],
  });
  await obs('bpLow', {
    code: loinc('85354-9'),
    component: [
      { code: loinc('8480-6'), valueQuantity: mmHg(110) },
      { code: loinc('8462-4'), valueQuantity: mmHg(95) },
    ],
  });
  await obs('systolic', { code: loinc('8480-6'), valueQuantity: mmHg(120) });
  await obs('heartRate', { code: { coding: [{ system: LOINC, code: '8867-4' }, { system: 'http://snomed.info/sct', code: '364075005' }] }, valueQuantity: { value: 72, unit: '/min', system: UCUM, code: '/min' } });
  await obs('bloodGroup', { code: loinc('883-9'), valueCodeableConcept: { coding: [{ system: 'http://snomed.info/sct', code: '112144000' }] } });
  await obs('onset', { code: loinc('11368-8'), valueDateTime: '2024-05-01T10:00:00Z' });
  await obs('comment', { code: loinc('48767-8'), valueString: 'Positive for influenza A' });
  await obs('urine', {
    code: loinc('24356-8'),
    component: [{ code: loinc('5778-6'), valueCodeableConcept: { coding: [{ system: 'http://snomed.info/sct', code: '371244009' }] } }],
  });
  ids.group = (
    await create(s, {
      resourceType: 'Group',
      type: 'person',
      actual: true,
      characteristic: [
        { code: { coding: [{ system: 'http://example.org/chars', code: 'gender' }] }, valueCodeableConcept: { coding: [{ code: 'female' }] }, exclude: false },
        { code: { coding: [{ system: 'http://example.org/chars', code: 'smoker' }] }, valueBoolean: true, exclude: false },
      ],
    })
  ).id;
  for (const [name, type, value] of [
    ['mrn', 'MR', '12345'],
    ['licence', 'DL', '12345'],
    ['both', 'MR', '777'],
  ] as const) {
    ids[name] = (
      await create(s, {
        resourceType: 'Patient',
        identifier: [
          { system: 'urn:oid:1.2.3', value, type: { coding: [{ system: V2, code: type }], text: type } },
          ...(name === 'both' ? [{ system: 'urn:oid:9.9', value: '12345', type: { coding: [{ system: V2, code: 'DL' }] } }] : []),
        ],
      })
    ).id;
  }
});
afterAll(async () => s.close());

const get = async (q: string) => {
  const r = await s.http.get(`${s.base}/${q}`);
  if (r.status !== 200) throw new Error(`${q}: ${r.status} ${JSON.stringify(r.body)}`);
  return matchIds(r.body).sort();
};
const sorted = (...names: string[]) => names.map((n) => ids[n]).sort();
const q = encodeURIComponent;

describe('composite parameters', () => {
  test('component-code-value-quantity matches code and value of the same component', async () => {
    expect(await get(`Observation?component-code-value-quantity=${q(`${LOINC}|8480-6$gt140`)}`)).toEqual(sorted('bpHigh'));
    expect(await get(`Observation?component-code-value-quantity=${q(`${LOINC}|8462-4$gt90`)}`)).toEqual(sorted('bpLow'));
    // bpHigh has a systolic (150) and a value below 80 (the diastolic): not the same component
    expect(await get(`Observation?component-code-value-quantity=${q(`${LOINC}|8480-6$lt80`)}`)).toEqual([]);
    expect(await get(`Observation?component-code-value-quantity=${q(`8480-6$le110|${UCUM}|mm[Hg]`)}`)).toEqual(sorted('bpLow'));
  });

  test('code-value-quantity: number, system and unit code of the Observation value', async () => {
    expect(await get(`Observation?code-value-quantity=${q(`${LOINC}|8480-6$120|${UCUM}|mm[Hg]`)}`)).toEqual(sorted('systolic'));
    expect(await get(`Observation?code-value-quantity=${q(`${LOINC}|8480-6$gt130`)}`)).toEqual([]);
    expect(await get(`Observation?code-value-quantity=${q(`${LOINC}|8480-6$120|${UCUM}|kg`)}`)).toEqual([]);
    expect(await get(`Observation?code-value-quantity=${q(`8480-6$120||mmHg`)}`)).toEqual(sorted('systolic'));
    // a panel's components are not the Observation's own code and value
    expect(await get(`Observation?code-value-quantity=${q(`${LOINC}|8480-6$gt100`)}`)).toEqual(sorted('systolic'));
    // any coding of the code: the SNOMED coding of the heart rate, with its value
    expect(await get(`Observation?code-value-quantity=${q(`http://snomed.info/sct|364075005$ge72`)}`)).toEqual(sorted('heartRate'));
  });

  test('combo-code-value-quantity looks at the Observation and at each component', async () => {
    expect(await get(`Observation?combo-code-value-quantity=${q(`${LOINC}|8480-6$gt100`)}`)).toEqual(sorted('bpHigh', 'bpLow', 'systolic'));
    expect(await get(`Observation?combo-code-value-quantity=${q(`${LOINC}|8480-6$gt130`)}`)).toEqual(sorted('bpHigh'));
  });

  test('comma-separated values are alternatives; repeated parameters must all match', async () => {
    const either = q(`${LOINC}|8480-6$gt140,${LOINC}|8462-4$gt90`);
    expect(await get(`Observation?component-code-value-quantity=${either}`)).toEqual(sorted('bpHigh', 'bpLow'));
    const both = `component-code-value-quantity=${q(`${LOINC}|8480-6$gt140`)}&component-code-value-quantity=${q(`${LOINC}|8462-4$lt75`)}`;
    expect(await get(`Observation?${both}`)).toEqual(sorted('bpHigh'));
  });

  test('code-value-concept, component-code-value-concept, code-value-date, code-value-string', async () => {
    expect(await get(`Observation?code-value-concept=${q(`${LOINC}|883-9$http://snomed.info/sct|112144000`)}`)).toEqual(sorted('bloodGroup'));
    expect(await get(`Observation?code-value-concept=${q(`${LOINC}|883-9$112144001`)}`)).toEqual([]);
    expect(await get(`Observation?component-code-value-concept=${q(`5778-6$371244009`)}`)).toEqual(sorted('urine'));
    expect(await get(`Observation?code-value-date=${q(`${LOINC}|11368-8$2024-05-01`)}`)).toEqual(sorted('onset'));
    expect(await get(`Observation?code-value-date=${q(`${LOINC}|11368-8$ge2024-05-02`)}`)).toEqual([]);
    expect(await get(`Observation?code-value-date=${q(`${LOINC}|11368-8$lt2024-06`)}`)).toEqual(sorted('onset'));
    expect(await get(`Observation?code-value-string=${q(`${LOINC}|48767-8$positive`)}`)).toEqual(sorted('comment'));
    expect(await get(`Observation?code-value-string=${q(`${LOINC}|48767-8$negative`)}`)).toEqual([]);
  });

  test('Group characteristic-value pairs a characteristic with its own value', async () => {
    expect(await get(`Group?characteristic-value=${q('gender$female')}`)).toEqual([ids.group]);
    expect(await get(`Group?characteristic-value=${q('http://example.org/chars|smoker$true')}`)).toEqual([ids.group]);
    expect(await get(`Group?characteristic-value=${q('gender$true')}`)).toEqual([]);
    expect(await get(`Group?characteristic-value=${q('smoker$female')}`)).toEqual([]);
  });

  test('an update replaces the composite rows', async () => {
    const o = await create(s, { resourceType: 'Observation', status: 'final', code: loinc('2339-0'), valueQuantity: { value: 5.5, system: UCUM, code: 'mmol/L' } });
    expect(await get(`Observation?code-value-quantity=${q(`${LOINC}|2339-0$5.5`)}`)).toEqual([o.id]);
    const upd = await s.http
      .put(`${s.base}/Observation/${o.id}`)
      .set('Content-Type', FHIR_JSON)
      .send({ resourceType: 'Observation', id: o.id, status: 'final', code: loinc('2339-0'), valueQuantity: { value: 7.1, system: UCUM, code: 'mmol/L' } });
    expect(upd.status).toBe(200);
    expect(await get(`Observation?code-value-quantity=${q(`${LOINC}|2339-0$5.5`)}`)).toEqual([]);
    expect(await get(`Observation?code-value-quantity=${q(`${LOINC}|2339-0$7.1`)}`)).toEqual([o.id]);
    const rows = await s.db.owner.raw(`SELECT count(*)::int AS n FROM idx_composite WHERE tenant_id = ? AND res_id = ?`, [s.tenant, o.id]);
    expect(rows.rows[0].n).toBe(2); // code-value-quantity and combo-code-value-quantity
    expect([200, 204]).toContain((await s.http.delete(`${s.base}/Observation/${o.id}`)).status);
    const after = await s.db.owner.raw(`SELECT count(*)::int AS n FROM idx_composite WHERE tenant_id = ? AND res_id = ?`, [s.tenant, o.id]);
    expect(after.rows[0].n).toBe(0);
  });

  test('other R4 composites: a Range value, three components, DocumentReference relationship', async () => {
    const ad = await create(s, {
      resourceType: 'ActivityDefinition',
      status: 'active',
      useContext: [
        { code: { system: 'http://terminology.hl7.org/CodeSystem/usage-context-type', code: 'age' }, valueRange: { low: { value: 18, unit: 'a' }, high: { value: 65, unit: 'a' } } },
        { code: { system: 'http://terminology.hl7.org/CodeSystem/usage-context-type', code: 'focus' }, valueCodeableConcept: { coding: [{ code: 'diabetes' }] } },
      ],
    });
    expect(await get(`ActivityDefinition?context-type-quantity=${q('age$gt30')}`)).toEqual([ad.id]);
    expect(await get(`ActivityDefinition?context-type-quantity=${q('age$gt70')}`)).toEqual([]);
    expect(await get(`ActivityDefinition?context-type-quantity=${q('age$lt10')}`)).toEqual([]);
    expect(await get(`ActivityDefinition?context-type-value=${q('focus$diabetes')}`)).toEqual([ad.id]);
    expect(await get(`ActivityDefinition?context-type-value=${q('age$diabetes')}`)).toEqual([]);

    const ms = await create(s, {
      resourceType: 'MolecularSequence',
      coordinateSystem: 0,
      referenceSeq: { chromosome: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/chromosome-human', code: '1' }] }, windowStart: 100, windowEnd: 200 },
      variant: [{ start: 120, end: 121 }],
    });
    expect(await get(`MolecularSequence?chromosome-variant-coordinate=${q('1$ge110$lt130')}`)).toEqual([ms.id]);
    expect(await get(`MolecularSequence?chromosome-variant-coordinate=${q('1$ge125$lt130')}`)).toEqual([]);
    expect(await get(`MolecularSequence?chromosome-window-coordinate=${q('1$100$200')}`)).toEqual([ms.id]);

    const target = await create(s, { resourceType: 'DocumentReference', status: 'current', content: [{ attachment: { url: 'http://example.org/a.pdf' } }] });
    const dr = await create(s, {
      resourceType: 'DocumentReference',
      status: 'current',
      content: [{ attachment: { url: 'http://example.org/b.pdf' } }],
      relatesTo: [{ code: 'replaces', target: { reference: `DocumentReference/${target.id}` } }],
    });
    expect(await get(`DocumentReference?relationship=${q(`DocumentReference/${target.id}$replaces`)}`)).toEqual([dr.id]);
    expect(await get(`DocumentReference?relationship=${q(`DocumentReference/${target.id}$appends`)}`)).toEqual([]);
  });

  test('malformed composite values and modifiers are rejected with 400', async () => {
    for (const bad of [
      `code-value-quantity=${q(`${LOINC}|8480-6`)}`,
      `code-value-quantity=${q(`${LOINC}|8480-6$1$2`)}`,
      `code-value-quantity=${q(`${LOINC}|8480-6$abc`)}`,
      `code-value-quantity=${q(`$120`)}`,
      `code-value-date=${q(`${LOINC}|11368-8$23 May`)}`,
      `code-value-quantity:missing=true`,
      `code-value-quantity:exact=${q(`${LOINC}|8480-6$120`)}`,
    ]) {
      const r = await s.http.get(`${s.base}/Observation?${bad}`);
      expect([bad, r.status]).toEqual([bad, 400]);
      expectOutcome(r.body);
    }
  });

  test('the CapabilityStatement lists the composite parameters', async () => {
    const r = await s.http.get(`${s.base}/metadata`);
    const obs = r.body.rest[0].resource.find((x: { type: string }) => x.type === 'Observation');
    const names = obs.searchParam.filter((p: { type: string }) => p.type === 'composite').map((p: { name: string }) => p.name);
    expect(names).toEqual(expect.arrayContaining(['code-value-quantity', 'component-code-value-quantity', 'combo-code-value-quantity', 'code-value-concept', 'code-value-date', 'code-value-string']));
  });
});

describe('token :of-type', () => {
  test('matches identifier type and value together', async () => {
    expect(await get(`Patient?identifier:of-type=${q(`${V2}|MR|12345`)}`)).toEqual(sorted('mrn'));
    expect(await get(`Patient?identifier:of-type=${q(`${V2}|DL|12345`)}`)).toEqual(sorted('licence', 'both'));
    // "both" has an MR identifier (777) and a DL identifier 12345, but no MR 12345
    expect(await get(`Patient?identifier:of-type=${q(`${V2}|MR|777`)}`)).toEqual(sorted('both'));
    expect(await get(`Patient?identifier:of-type=${q(`${V2}|MR|12345,${V2}|DL|777`)}`)).toEqual(sorted('mrn'));
    expect(await get(`Patient?identifier=12345`)).toEqual(sorted('mrn', 'licence', 'both'));
  });

  test('needs all three parts, and an Identifier parameter', async () => {
    const gender = await s.http.get(`${s.base}/Patient?gender:of-type=${q(`${V2}|MR|12345`)}`);
    expect(gender.status).toBe(400);
    expect(gender.body.issue[0].diagnostics).toMatch(/Identifier/);
    for (const v of [`${V2}|MR`, `|MR|12345`, `${V2}||12345`, `12345`]) {
      const r = await s.http.get(`${s.base}/Patient?identifier:of-type=${q(v)}`);
      expect(r.status).toBe(400);
      expectOutcome(r.body);
    }
  });
});

describe('token :in / :not-in with local value sets', () => {
  const VS = 'http://example.org/fhir/ValueSet';
  beforeAll(async () => {
    const vs = async (name: string, body: Record<string, unknown>) => {
      ids[name] = (await create(s, { resourceType: 'ValueSet', status: 'active', url: `${VS}/${name}`, ...body })).id;
    };
    await vs('bp', { compose: { include: [{ system: LOINC, concept: [{ code: '8480-6' }, { code: '8462-4' }] }] } });
    await vs('expanded', {
      expansion: {
        timestamp: '2024-01-01T00:00:00Z',
        contains: [
          { system: LOINC, code: '85354-9', contains: [{ system: LOINC, code: '8480-6' }] },
          { abstract: true, display: 'grouping only', contains: [{ system: 'http://snomed.info/sct', code: '364075005' }] },
        ],
      },
    });
    await vs('allLoincButPanels', { compose: { include: [{ system: LOINC }], exclude: [{ system: LOINC, concept: [{ code: '85354-9' }, { code: '24356-8' }] }] } });
    await vs('excluded', { compose: { include: [{ system: LOINC, concept: [{ code: '8480-6' }, { code: '883-9' }] }], exclude: [{ system: LOINC, concept: [{ code: '8480-6' }] }] } });
    await vs('filtered', { compose: { include: [{ system: LOINC, filter: [{ property: 'CLASS', op: '=', value: 'PANEL.BP' }] }] } });
    await vs('nested', { compose: { include: [{ valueSet: [`${VS}/bp`] }] } });
    await vs('versioned', { version: '2', compose: { include: [{ system: LOINC, concept: [{ code: '883-9' }] }] } });
  });

  test(':in with compose.include concepts, by url and by ValueSet/id', async () => {
    expect(await get(`Observation?code:in=${q(`${VS}/bp`)}`)).toEqual(sorted('systolic'));
    expect(await get(`Observation?code:in=ValueSet/${ids.bp}`)).toEqual(sorted('systolic'));
    expect(await get(`Observation?component-code:in=${q(`${VS}/bp`)}`)).toEqual(sorted('bpHigh', 'bpLow'));
    expect(await get(`Observation?code:in=${q(`${VS}/versioned|2`)}`)).toEqual(sorted('bloodGroup'));
  });

  test(':in with a (nested) expansion; abstract entries are not members but their children are', async () => {
    expect(await get(`Observation?code:in=${q(`${VS}/expanded`)}`)).toEqual(sorted('bpHigh', 'bpLow', 'systolic', 'heartRate'));
  });

  test('compose.exclude removes codes, also from a whole-system include', async () => {
    expect(await get(`Observation?code:in=${q(`${VS}/excluded`)}`)).toEqual(sorted('bloodGroup'));
    expect(await get(`Observation?code:in=${q(`${VS}/allLoincButPanels`)}`)).toEqual(
      sorted('systolic', 'heartRate', 'bloodGroup', 'onset', 'comment'),
    );
  });

  test(':not-in is the complement (including resources without the element)', async () => {
    const all = await get('Observation?_count=100');
    const inBp = await get(`Observation?code:in=${q(`${VS}/bp`)}`);
    const notIn = await get(`Observation?code:not-in=${q(`${VS}/bp`)}`);
    expect(notIn).toEqual(all.filter((id) => !inBp.includes(id)));
  });

  test('a code element without a system matches the value set by code', async () => {
    const gvs = await create(s, {
      resourceType: 'ValueSet',
      status: 'active',
      url: `${VS}/female-other`,
      compose: { include: [{ system: 'http://hl7.org/fhir/administrative-gender', concept: [{ code: 'female' }, { code: 'other' }] }] },
    });
    const f = await create(s, { resourceType: 'Patient', gender: 'female', name: [{ family: 'Vsgender' }] });
    await create(s, { resourceType: 'Patient', gender: 'male', name: [{ family: 'Vsgender' }] });
    expect(await get(`Patient?family=vsgender&gender:in=${q(`${VS}/female-other`)}`)).toEqual([f.id]);
    expect(await get(`Patient?family=vsgender&gender:in=ValueSet/${gvs.id}`)).toEqual([f.id]);
  });

  test('value sets work through chains and _has, and in conditional interactions', async () => {
    const p = await create(s, { resourceType: 'Patient', name: [{ family: 'Vs' }] });
    await create(s, { resourceType: 'Observation', status: 'final', code: loinc('883-9'), subject: { reference: `Patient/${p.id}` } });
    expect(await get(`Patient?_has:Observation:subject:code:in=${q(`${VS}/versioned`)}`)).toEqual([p.id]);
    const dup = await s.http
      .post(`${s.base}/Observation`)
      .set('Content-Type', FHIR_JSON)
      .set('If-None-Exist', `code:in=${q(`${VS}/excluded`)}&subject=Patient/${p.id}`)
      .send({ resourceType: 'Observation', status: 'final', code: loinc('883-9'), subject: { reference: `Patient/${p.id}` } });
    expect(dup.status).toBe(200);
  });

  test('unknown value sets and value sets that need terminology are 400 with a clear message', async () => {
    const unknown = await s.http.get(`${s.base}/Observation?code:in=${q(`${VS}/nope`)}`);
    expect(unknown.status).toBe(400);
    expectOutcome(unknown.body);
    expect(unknown.body.issue[0].diagnostics).toMatch(/not known/);
    for (const name of ['filtered', 'nested']) {
      const r = await s.http.get(`${s.base}/Observation?code:in=${q(`${VS}/${name}`)}`);
      expect(r.status).toBe(400);
      expectOutcome(r.body, 'not-supported');
      expect(r.body.issue[0].diagnostics).toMatch(/terminology/);
    }
    expect((await s.http.get(`${s.base}/Observation?code:in=${q(`${VS}/versioned|1`)}`)).status).toBe(400);
  });

  test('a value set of another tenant is not visible', async () => {
    const other = await s.newTenant();
    const r = await s.http.get(`/fhir/${other}/Observation?code:in=${q(`${VS}/bp`)}`);
    expect(r.status).toBe(400);
    expect(r.body.issue[0].diagnostics).toMatch(/not known/);
  });
});

test('escaping inside composite values: \\$ and \\| are literal, \\, does not split', async () => {
  const s2 = await startTestServer();
  try {
    const code = 'a$b|c,d';
    const r = await s2.http.post(`${s2.base}/Observation`).set('Content-Type', 'application/fhir+json').send({
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'urn:esc', code }] },
      valueString: 'x$y',
    });
    expect(r.status).toBe(201);
    const q = await s2.http.get(`${s2.base}/Observation`).query({ 'code-value-string': 'urn:esc|a\\$b\\|c\\,d$x\\$y' });
    expect(q.status).toBe(200);
    expect(q.body.total).toBe(1);
    // unescaped, the same characters split differently and match nothing
    const miss = await s2.http.get(`${s2.base}/Observation`).query({ 'code-value-string': 'urn:esc|a$b|c,d$x$y' });
    expect(miss.status).toBe(400); // four $-separated values for a two-component parameter
    const other = await s2.http.get(`${s2.base}/Observation`).query({ 'code-value-string': 'urn:esc|a$b' });
    expect(other.body.total).toBe(0);
  } finally {
    await s2.close();
  }
});
