/** Content negotiation, _pretty, _summary/_elements, 413, hostile inputs (no 500), tenant isolation. */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { create, expectOutcome, matchIds, patientWith, uniq } from './rest-util';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s.close());

const SUBSETTED = expect.objectContaining({ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' });
const hasSubsetted = (r: { meta?: { tag?: unknown[] } }) => (r.meta?.tag ?? []).some((t) => (t as { code?: string }).code === 'SUBSETTED');

describe('content negotiation', () => {
  let id: string;
  beforeAll(async () => {
    id = (await create(s, patientWith('urn:t:neg', uniq()))).id;
  });

  test('_format=json / application/fhir+json and Accept application/json answer FHIR JSON', async () => {
    for (const q of ['_format=json', '_format=application/json', '_format=application/fhir%2Bjson']) {
      const r = await s.http.get(`${s.base}/Patient/${id}?${q}`);
      expect([q, r.status]).toEqual([q, 200]);
      expect(r.headers['content-type']).toMatch(/^application\/fhir\+json/);
      expect(r.body.id).toBe(id);
    }
    for (const accept of ['application/json', 'application/fhir+json', 'application/fhir+json; fhirVersion=4.0', '*/*', 'text/html, application/json;q=0.9']) {
      const r = await s.http.get(`${s.base}/Patient/${id}`).set('Accept', accept);
      expect([accept, r.status]).toEqual([accept, 200]);
      expect(r.headers['content-type']).toMatch(/^application\/fhir\+json/);
      expect(JSON.parse(r.text).id).toBe(id);
    }
  });

  test('Accept application/xml → 406; _format=xml → 406; _format overrides Accept', async () => {
    const xml = await s.http.get(`${s.base}/Patient/${id}`).set('Accept', 'application/fhir+xml');
    expect(xml.status).toBe(406);
    expectOutcome(JSON.parse(xml.text));
    const xml2 = await s.http.get(`${s.base}/Patient/${id}`).set('Accept', 'application/xml');
    expect(xml2.status).toBe(406);
    const fx = await s.http.get(`${s.base}/Patient/${id}?_format=xml`);
    expect(fx.status).toBe(406);
    expectOutcome(JSON.parse(fx.text));
    const over = await s.http.get(`${s.base}/Patient/${id}?_format=json`).set('Accept', 'application/xml');
    expect(over.status).toBe(200);
    const over2 = await s.http.get(`${s.base}/Patient/${id}?_format=xml`).set('Accept', 'application/json');
    expect(over2.status).toBe(406);
    const search = await s.http.get(`${s.base}/Patient?_format=xml`);
    expect(search.status).toBe(406);
  });

  test('an unsupported body Content-Type → 415; JSON with charset is fine', async () => {
    const txt = await s.http.post(`${s.base}/Patient`).set('Content-Type', 'text/plain').send(JSON.stringify(patientWith('urn:t:ct', 'a')));
    expect(txt.status).toBe(415);
    expectOutcome(txt.body, 'not-supported');
    const xml = await s.http.post(`${s.base}/Patient`).set('Content-Type', 'application/fhir+xml').send('<Patient xmlns="http://hl7.org/fhir"/>');
    expect(xml.status).toBe(415);
    const put = await s.http.put(`${s.base}/Patient/${id}`).set('Content-Type', 'text/plain').send(JSON.stringify({ resourceType: 'Patient', id }));
    expect(put.status).toBe(415);
    const ok = await s.http
      .post(`${s.base}/Patient`)
      .set('Content-Type', 'application/fhir+json; charset=utf-8')
      .send(JSON.stringify(patientWith('urn:t:ct', 'b')));
    expect(ok.status).toBe(201);
    const plain = await s.http.post(`${s.base}/Patient`).set('Content-Type', 'application/json').send(JSON.stringify(patientWith('urn:t:ct', 'c')));
    expect(plain.status).toBe(201);
    // _format does not override the request Content-Type
    const fmt = await s.http.post(`${s.base}/Patient?_format=json`).set('Content-Type', 'text/plain').send(JSON.stringify(patientWith('urn:t:ct', 'd')));
    expect(fmt.status).toBe(415);
  });

  test('_pretty=true indents; default is compact', async () => {
    const pretty = await s.http.get(`${s.base}/Patient/${id}?_pretty=true`);
    expect(pretty.status).toBe(200);
    expect(pretty.text).toMatch(/^\{\n {2}"resourceType": "Patient"/);
    const compact = await s.http.get(`${s.base}/Patient/${id}`);
    expect(compact.text).not.toContain('\n');
    expect(JSON.parse(pretty.text)).toEqual(JSON.parse(compact.text));
    const prettySearch = await s.http.get(`${s.base}/Patient?_id=${id}&_pretty=true`);
    expect(prettySearch.text).toContain('\n  "type": "searchset"');
    const prettyError = await s.http.get(`${s.base}/Patient/${uniq('none')}?_pretty=true`);
    expect(prettyError.status).toBe(404);
    expect(prettyError.text).toContain('\n  "issue"');
  });

  test('X-Request-Id is echoed or generated', async () => {
    const r = await s.http.get(`${s.base}/metadata`).set('X-Request-Id', 'abc-123');
    expect(r.headers['x-request-id']).toBe('abc-123');
    const g = await s.http.get(`${s.base}/metadata`);
    expect(g.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  test('GET /metadata is a CapabilityStatement for 4.0.1', async () => {
    const r = await s.http.get(`${s.base}/metadata`);
    expect(r.status).toBe(200);
    expect(r.body.resourceType).toBe('CapabilityStatement');
    expect(r.body.fhirVersion).toBe('4.0.1');
    expect(r.body.format).toContain('application/fhir+json');
  });
});

describe('_summary and _elements on read', () => {
  let id: string;
  const full = {
    resourceType: 'Patient',
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Ada</div>' },
    identifier: [{ system: 'urn:t:sum', value: 'x' }],
    active: true,
    name: [{ family: 'Summary' }],
    gender: 'female',
    birthDate: '1980-05-05',
    maritalStatus: { text: 'married' },
    deceasedBoolean: false,
  };
  beforeAll(async () => {
    id = (await create(s, full)).id;
  });

  test('_summary=true keeps summary elements only and tags SUBSETTED', async () => {
    const r = await s.http.get(`${s.base}/Patient/${id}?_summary=true`);
    expect(r.status).toBe(200);
    expect(r.body.id).toBe(id);
    expect(r.body.meta.tag).toEqual(expect.arrayContaining([SUBSETTED]));
    expect(r.body.meta.versionId).toBe('1');
    expect(r.body.name).toEqual(full.name);
    expect(r.body.birthDate).toBe('1980-05-05');
    expect(r.body.deceasedBoolean).toBe(false); // deceased[x]
    expect(r.body.text).toBeUndefined();
    expect(r.body.maritalStatus).toBeUndefined();
  });

  test('_summary=data drops text only', async () => {
    const r = await s.http.get(`${s.base}/Patient/${id}?_summary=data`);
    expect(r.status).toBe(200);
    expect(r.body.meta.tag).toEqual(expect.arrayContaining([SUBSETTED]));
    expect(r.body.text).toBeUndefined();
    expect(r.body.maritalStatus).toEqual(full.maritalStatus);
    expect(r.body.name).toEqual(full.name);
  });

  test('_summary=text keeps text, id, meta', async () => {
    const r = await s.http.get(`${s.base}/Patient/${id}?_summary=text`);
    expect(r.status).toBe(200);
    expect(r.body.text).toEqual(full.text);
    expect(r.body.name).toBeUndefined();
    expect(hasSubsetted(r.body)).toBe(true);
  });

  test('_elements=id,active keeps only those (plus mandatory), tagged SUBSETTED', async () => {
    const r = await s.http.get(`${s.base}/Patient/${id}?_elements=id,active`);
    expect(r.status).toBe(200);
    expect(r.body.resourceType).toBe('Patient');
    expect(r.body.id).toBe(id);
    expect(r.body.active).toBe(true);
    expect(r.body.meta.tag).toEqual(expect.arrayContaining([SUBSETTED]));
    for (const k of ['name', 'gender', 'birthDate', 'text', 'identifier', 'maritalStatus']) expect(r.body[k]).toBeUndefined();
    const typed = await s.http.get(`${s.base}/Patient/${id}?_elements=Patient.gender,deceased[x]`);
    expect(typed.body.gender).toBe('female');
    expect(typed.body.deceasedBoolean).toBe(false);
    expect(typed.body.active).toBeUndefined();
  });

  test('_elements and _summary=text keep the mandatory elements too', async () => {
    const o = await create(s, {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'weight' },
      subject: { reference: `Patient/${id}` },
      valueString: 'heavy',
      text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">w</div>' },
    });
    const el = await s.http.get(`${s.base}/Observation/${o.id}?_elements=subject`);
    expect(el.status).toBe(200);
    expect(el.body.subject).toEqual({ reference: `Patient/${id}` });
    expect(el.body.status).toBe('final');
    expect(el.body.code).toEqual({ text: 'weight' });
    expect(el.body.valueString).toBeUndefined();
    expect(el.body.text).toBeUndefined();
    expect(hasSubsetted(el.body)).toBe(true);
    const txt = await s.http.get(`${s.base}/Observation/${o.id}?_summary=text`);
    expect(txt.body.text).toBeDefined();
    expect(txt.body.status).toBe('final');
    expect(txt.body.code).toEqual({ text: 'weight' });
    expect(txt.body.subject).toBeUndefined();
    expect(txt.body.valueString).toBeUndefined();
  });

  test('no shaping, or _summary=false: the full resource without the tag', async () => {
    for (const q of ['', '?_summary=false']) {
      const r = await s.http.get(`${s.base}/Patient/${id}${q}`);
      expect(r.body.maritalStatus).toEqual(full.maritalStatus);
      expect(r.body.text).toEqual(full.text);
      expect(hasSubsetted(r.body)).toBe(false);
    }
  });

  test('the stored resource is not changed by a subsetted read', async () => {
    await s.http.get(`${s.base}/Patient/${id}?_elements=active`).expect(200);
    const r = await s.http.get(`${s.base}/Patient/${id}/_history/1`);
    expect(hasSubsetted(r.body)).toBe(false);
    expect(r.body.name).toEqual(full.name);
  });

  test('bad _summary / _elements values → 400', async () => {
    for (const q of ['_summary=maybe', '_elements=1abc', '_elements=name.family']) {
      const r = await s.http.get(`${s.base}/Patient/${id}?${q}`);
      expect([q, r.status]).toEqual([q, 400]);
      expectOutcome(r.body);
    }
  });
});

describe('body limit', () => {
  let small: TestServer;
  beforeAll(async () => {
    small = await startTestServer({ BODY_LIMIT: '1kb' });
  });
  afterAll(async () => small.close());

  test('a 5 KB body on a 1 KB server → 413 with an OperationOutcome; a small one works', async () => {
    const big = { resourceType: 'Patient', name: [{ family: 'x'.repeat(5 * 1024) }] };
    const r = await small.http.post(`${small.base}/Patient`).set('Content-Type', FHIR_JSON).send(big);
    expect(r.status).toBe(413);
    expectOutcome(r.body, 'too-costly');
    expect(r.headers['content-type']).toMatch(/^application\/fhir\+json/);
    const ok = await small.http.post(`${small.base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient' });
    expect(ok.status).toBe(201);
    // nothing of the big one was stored
    const search = await small.http.get(`${small.base}/Patient`).query({ _summary: 'count' });
    expect(search.body.total).toBe(1);
  });
});

describe('hostile inputs never give a 500', () => {
  const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
  type Case = [string, () => Promise<{ status: number; text: string; body: unknown }>];
  const json = (method: 'post' | 'put', path: string, body: string, ct = FHIR_JSON) => () =>
    s.http[method](`${s.base}${path}`).set('Content-Type', ct).send(body);
  const get = (path: string) => () => s.http.get(`${s.base}${path}`);
  const cases: Case[] = [
    ['bad percent-encoding in the path', get('/Patient/%E0%A4%A')],
    ['65-character id (read)', get(`/Patient/${'a'.repeat(65)}`)],
    ['65-character id (vread)', get(`/Patient/${'a'.repeat(65)}/_history/1`)],
    ['65-character id (history)', get(`/Patient/${'a'.repeat(65)}/_history`)],
    ['65-character id (delete)', () => s.http.delete(`${s.base}/Patient/${'a'.repeat(65)}`)],
    ['id with a slash', get('/Patient/a%2Fb')],
    ['id with a NUL', get('/Patient/a%00b')],
    ['NUL in a search value', get('/Patient?family=a%00b')],
    ['NUL in an identifier search', get('/Patient?identifier=a%00b|c')],
    ['_count=-1', get('/Patient?_count=-1')],
    ['_count=abc', get('/Patient?_count=abc')],
    ['birthdate=notadate', get('/Patient?birthdate=notadate')],
    ['date with an impossible offset', get('/Patient?birthdate=2024-01-01T10:00:00%2B99:99')],
    ['date with hour 24', get('/Patient?birthdate=2024-01-01T24:00:00Z')],
    ['_since with an impossible offset', get('/_history?_since=2024-01-01T10:00:00%2B15:00')],
    ['_cursor garbage', get('/Patient?_cursor=garbage')],
    ['_cursor well-formed base64 of junk', get(`/Patient?_cursor=${Buffer.from('{"t":"x","i":1}').toString('base64url')}`)],
    ['history cursor garbage', get('/_history?_before=abc')],
    ['nested query object', get('/Patient?identifier[a]=b')],
    ['empty search value', get('/Patient?family=')],
    ['number search garbage', get('/Observation?value-quantity=abc')],
    ['unknown resource type', get('/Foo')],
    ['unknown resource type instance', get('/Foo/1')],
    ['unknown path depth', get('/Patient/1/_history/1/extra/more')],
    ['system search with an unknown type', get('?_type=NoSuchType')],
    ['PUT body is a JSON array', json('put', '/Patient/abc', '[1,2]')],
    ['PUT body is null', json('put', '/Patient/abc', 'null')],
    ['PUT body is a number', json('put', '/Patient/abc', '42')],
    ['PUT body is a string', json('put', '/Patient/abc', '"Patient"')],
    ['PUT with an empty body', json('put', '/Patient/abc', '')],
    ['POST body is an array', json('post', '/Patient', '[]')],
    ['POST body is null', json('post', '/Patient', 'null')],
    ['POST without resourceType', json('post', '/Patient', '{"name":[{"family":"x"}]}')],
    ['POST wrong resourceType', json('post', '/Patient', '{"resourceType":"Observation","status":"final","code":{"text":"x"}}')],
    ['POST unknown resourceType', json('post', '/Patient', '{"resourceType":"Foo"}')],
    ['POST document Bundle to the base', json('post', '', JSON.stringify({ resourceType: 'Bundle', type: 'document', entry: [] }))],
    ['POST non-Bundle to the base', json('post', '', JSON.stringify({ resourceType: 'Patient' }))],
    ['POST Bundle with entry not an array', json('post', '', JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: {} }))],
    ['POST transaction with a junk entry', json('post', '', JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [1, null, 'x'] }))],
    [
      'Observation with value 1e400',
      json('post', '/Observation', '{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1e400}}'),
    ],
    [
      'Observation with value -1e400',
      json('post', '/Observation', '{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":-1e400}}'),
    ],
    ['NUL inside a string', json('post', '/Patient', '{"resourceType":"Patient","name":[{"family":"a\\u0000b"}]}')],
    ['lone surrogate inside a string', json('post', '/Patient', '{"resourceType":"Patient","name":[{"family":"a\\ud800b"}]}')],
    ['deeply nested JSON', json('post', '/Patient', `{"resourceType":"Patient","extension":${deep(5000)}}`)],
    ['__proto__ key', json('post', '/Patient', '{"resourceType":"Patient","__proto__":{"x":1}}')],
    ['id is a number', json('put', '/Patient/abc', '{"resourceType":"Patient","id":123}')],
    ['birthDate far future', json('post', '/Patient', '{"resourceType":"Patient","birthDate":"9999-12-31"}')],
    ['patch body is an object', () => s.http.patch(`${s.base}/Patient/abc`).set('Content-Type', 'application/json-patch+json').send('{}')],
    ['patch with junk ops', () => s.http.patch(`${s.base}/Patient/abc`).set('Content-Type', 'application/json-patch+json').send('[1,null]')],
    ['If-Match garbage', () => s.http.put(`${s.base}/Patient/abc`).set('Content-Type', FHIR_JSON).set('If-Match', 'W/"999999999999999999999999"').send({ resourceType: 'Patient', id: 'abc' })],
    ['If-None-Exist garbage', () => s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).set('If-None-Exist', '%%%=&&').send({ resourceType: 'Patient' })],
    ['Idempotency-Key too long', () => s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).set('Idempotency-Key', 'k'.repeat(300)).send({ resourceType: 'Patient' })],
    ['operation unknown', () => s.http.post(`${s.base}/Patient/$frobnicate`).set('Content-Type', FHIR_JSON).send('{}')],
    ['$validate with a number', json('post', '/Patient/$validate', '5')],
    ['$restore via GET', get('/Patient/abc/$restore')],
  ];

  test.each(cases)('%s', async (_name, run) => {
    const r = await run();
    expect(r.status).toBeLessThan(500);
    expect(r.status).toBeGreaterThanOrEqual(400);
    expectOutcome(JSON.parse(r.text));
  });

  test('exact statuses for the main hostile cases', async () => {
    const expectations: Array<[string, () => Promise<{ status: number }>, number]> = [
      ['bad percent-encoding', get('/Patient/%E0%A4%A'), 400],
      ['65-character id', get(`/Patient/${'a'.repeat(65)}`), 400],
      ['64-character id is valid (unknown)', get(`/Patient/${'a'.repeat(64)}`), 404],
      ['_count=-1', get('/Patient?_count=-1'), 400],
      ['_count=abc', get('/Patient?_count=abc'), 400],
      ['birthdate=notadate', get('/Patient?birthdate=notadate'), 400],
      ['PUT array', json('put', '/Patient/abc', '[1,2]'), 400],
      ['PUT null', json('put', '/Patient/abc', 'null'), 400],
      ['PUT number', json('put', '/Patient/abc', '42'), 400],
      ['PUT string', json('put', '/Patient/abc', '"Patient"'), 400],
      ['document Bundle', json('post', '', JSON.stringify({ resourceType: 'Bundle', type: 'document' })), 400],
      ['deep nesting', json('post', '/Patient', `{"resourceType":"Patient","extension":${deep(5000)}}`), 400],
      ['unknown type', get('/Foo'), 404],
      ['unknown type instance', get('/Foo/1'), 404],
      ['POST to an unknown type', json('post', '/Foo', '{"resourceType":"Foo"}'), 404],
    ];
    for (const [name, run, status] of expectations) {
      const r = await run();
      expect([name, r.status]).toEqual([name, status]);
    }
  });

  test('numbers beyond double range are refused, not stored as null', async () => {
    const r = await s.http
      .post(`${s.base}/Observation`)
      .set('Content-Type', FHIR_JSON)
      .send('{"resourceType":"Observation","status":"final","code":{"text":"1e400"},"valueQuantity":{"value":1e400}}');
    expect(r.status).toBe(400);
    expectOutcome(r.body, 'structure');
    const all = await s.http.get(`${s.base}/Observation`).query({ 'code:text': '1e400' });
    expect(all.body.total).toBe(0);
  });

  // Odd but legal requests: answered normally.
  type OkCase = [string, () => Promise<{ status: number; body: any }>, number];
  const okCases: OkCase[] = [
    ['undecodable query value is matched literally', get('/Patient?family=%E0%A4%A'), 200],
    ['huge _count is capped', get('/Patient?_count=99999999999999999999999'), 200],
    ['birthdate year 9999', get('/Patient?birthdate=9999-12-31'), 200],
    ['birthdate before year 1', get('/Patient?birthdate=lt0001-01-01'), 200],
    ['_lastUpdated far future', get('/Patient?_lastUpdated=ge9999-12-31T23:59:59Z'), 200],
    ['quantity search beyond double range', get('/Observation?value-quantity=1e400'), 200],
    ['Observation with value 1e300', json('post', '/Observation', '{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1e300}}'), 201],
    ['batch with junk entries answers per entry', json('post', '', JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [1, null, 'x'] })), 200],
  ];
  test.each(okCases)('%s', async (_name, run, status) => {
    const r = await run();
    expect(r.status).toBe(status);
  });

  test('a batch with junk entries answers each with a 4xx and an outcome', async () => {
    const r = await s.http.post(s.base).set('Content-Type', FHIR_JSON).send({ resourceType: 'Bundle', type: 'batch', entry: [1, null, 'x'] });
    expect(r.status).toBe(200);
    expect(r.body.type).toBe('batch-response');
    expect(r.body.entry).toHaveLength(3);
    for (const e of r.body.entry) {
      expect(e.response.status).toMatch(/^4\d\d/);
      expectOutcome(e.response.outcome);
    }
  });

  test('unsupported _sort is ignored with a warning and left out of the self link', async () => {
    const r = await s.http.get(`${s.base}/Patient`).query({ _sort: 'nonsense' });
    expect(r.status).toBe(200);
    const oo = r.body.entry.find((e: { search?: { mode: string } }) => e.search?.mode === 'outcome');
    expect(oo.resource.issue[0].severity).toBe('warning');
    expect(JSON.stringify(oo.resource)).toContain('_sort');
    expect(r.body.link.find((l: { relation: string }) => l.relation === 'self').url).not.toContain('_sort');
    const strict = await s.http.get(`${s.base}/Patient`).query({ _sort: 'nonsense' }).set('Prefer', 'handling=strict');
    expect(strict.status).toBe(400);
    const ok = await s.http.get(`${s.base}/Patient`).query({ _sort: '-_lastUpdated' });
    expect(ok.body.link.find((l: { relation: string }) => l.relation === 'self').url).toContain('_sort=-_lastUpdated');
  });
});

describe('tenant isolation', () => {
  test('a resource of one tenant is invisible to another tenant', async () => {
    const other = await s.newTenant();
    const ob = `/fhir/${other}`;
    const v = uniq();
    const c = await create(s, patientWith('urn:t:iso', v));
    const read = await s.http.get(`${ob}/Patient/${c.id}`);
    expect(read.status).toBe(404);
    expectOutcome(read.body, 'not-found');
    expect((await s.http.get(`${ob}/Patient/${c.id}/_history/1`)).status).toBe(404);
    expect((await s.http.get(`${ob}/Patient/${c.id}/_history`)).status).toBe(404);

    const search = await s.http.get(`${ob}/Patient`).query({ identifier: `urn:t:iso|${v}` });
    expect(search.status).toBe(200);
    expect(matchIds(search.body)).toEqual([]);
    const all = await s.http.get(`${ob}/Patient`);
    expect(all.body.total).toBe(0);
    const typeHist = await s.http.get(`${ob}/Patient/_history`);
    expect(typeHist.status).toBe(200);
    expect(typeHist.body.entry ?? []).toEqual([]);
    const sysHist = await s.http.get(`${ob}/_history`);
    expect(sysHist.status).toBe(200);
    expect(sysHist.body.entry ?? []).toEqual([]);

    // writes through the other tenant do not touch ours
    const del = await s.http.delete(`${ob}/Patient/${c.id}`);
    expect(del.status).toBe(200);
    const patch = await s.http
      .patch(`${ob}/Patient/${c.id}`)
      .set('Content-Type', 'application/json-patch+json')
      .send(JSON.stringify([{ op: 'replace', path: '/active', value: false }]));
    expect(patch.status).toBe(404);
    const condDel = await s.http.delete(`${ob}/Patient`).query({ identifier: `urn:t:iso|${v}` });
    expect(condDel.status).toBe(200);
    const restore = await s.http.post(`${ob}/Patient/${c.id}/$restore`);
    expect(restore.status).toBe(404);
    const mine = await s.http.get(`${s.base}/Patient/${c.id}`);
    expect(mine.status).toBe(200);
    expect(mine.body.meta.versionId).toBe('1');

    // the same id may exist independently in both tenants
    const put = await s.http.put(`${ob}/Patient/${c.id}`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', id: c.id, gender: 'male' });
    expect(put.status).toBe(201);
    expect((await s.http.get(`${s.base}/Patient/${c.id}`)).body.gender).toBeUndefined();
    expect((await s.http.get(`${ob}/Patient/${c.id}`)).body.gender).toBe('male');
  });

  test('an unknown tenant base → 404 OperationOutcome', async () => {
    for (const path of ['/fhir/no-such-tenant/Patient', '/fhir/no-such-tenant/metadata', '/fhir/NO_SUCH/Patient']) {
      const r = await s.http.get(path);
      expect([path, r.status]).toEqual([path, 404]);
      expectOutcome(r.body, 'not-found');
    }
    const post = await s.http.post('/fhir/no-such-tenant/Patient').set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient' });
    expect(post.status).toBe(404);
  });

  test('paths outside /fhir are 404 OperationOutcomes', async () => {
    const r = await s.http.get('/nothing-here');
    expect(r.status).toBe(404);
    expectOutcome(JSON.parse(r.text));
  });
});
