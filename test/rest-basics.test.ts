import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s.close());

const patient = { resourceType: 'Patient', name: [{ family: 'Testperson', given: ['Ada'] }], birthDate: '1970-01-02' };

test('create assigns a new id, version 1, Location and ETag', async () => {
  const res = await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send({ ...patient, id: 'client-id' });
  expect(res.status).toBe(201);
  expect(res.headers['content-type']).toMatch(/^application\/fhir\+json/);
  expect(res.body.id).not.toBe('client-id');
  expect(res.headers.location).toBe(`${s.baseUrl}/Patient/${res.body.id}/_history/1`);
  expect(res.headers.etag).toBe('W/"1"');
  expect(res.body.meta.versionId).toBe('1');
  const read = await s.http.get(`${s.base}/Patient/${res.body.id}`);
  expect(read.status).toBe(200);
  expect(read.headers.etag).toBe('W/"1"');
  expect(read.headers['last-modified']).toBe(new Date(res.body.meta.lastUpdated).toUTCString());
  expect(read.body.name[0].family).toBe('Testperson');
});

test('unknown id is 404, deleted is 410 with an OperationOutcome', async () => {
  const missing = await s.http.get(`${s.base}/Patient/does-not-exist`);
  expect(missing.status).toBe(404);
  expect(missing.body.resourceType).toBe('OperationOutcome');
  const c = await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send(patient);
  const del = await s.http.delete(`${s.base}/Patient/${c.body.id}`);
  expect(del.status).toBe(200);
  const read = await s.http.get(`${s.base}/Patient/${c.body.id}`);
  expect(read.status).toBe(410);
  expect(read.body.issue[0].code).toBe('deleted');
});

test('invalid resource is 422 with an expression; bad JSON is 400', async () => {
  const res = await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', birthDate: '1970-13-45', foo: 1 });
  expect(res.status).toBe(422);
  const exprs = res.body.issue.flatMap((i: { expression?: string[] }) => i.expression ?? []);
  expect(exprs).toEqual(expect.arrayContaining(['Patient.birthDate', 'Patient.foo']));
  const bad = await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send('{"resourceType": ');
  expect(bad.status).toBe(400);
  expect(bad.body.resourceType).toBe('OperationOutcome');
});
