/** transaction and batch Bundles (http.html#transaction, bundle.html), over real HTTP. */
import { randomUUID } from 'node:crypto';
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s.close());

type Entry = { fullUrl?: string; resource?: Record<string, unknown>; request: Record<string, string> };
const bundle = (type: 'transaction' | 'batch', entry: Entry[]) => ({ resourceType: 'Bundle', type, ...(entry.length ? { entry } : {}) });
const postBundle = (b: unknown) => s.http.post(s.base).set('Content-Type', FHIR_JSON).send(b as object);
const urn = () => `urn:uuid:${randomUUID()}`;
/** A system unique to one test, so searches only see that test's data. */
const sys = () => `urn:test:${randomUUID()}`;

const patient = (extra: Record<string, unknown> = {}) => ({ resourceType: 'Patient', name: [{ family: 'Tx' }], ...extra });
const observation = (extra: Record<string, unknown> = {}) => ({
  resourceType: 'Observation',
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
  ...extra,
});

async function count(type: string, query: string): Promise<number> {
  const r = await s.http.get(`${s.base}/${type}?${query}&_summary=count`);
  expect(r.status).toBe(200);
  return r.body.total;
}

async function historyCount(type: string): Promise<number> {
  const r = await s.http.get(`${s.base}/${type}/_history?_count=1000`);
  expect(r.status).toBe(200);
  return r.body.total ?? (r.body.entry ?? []).length;
}

async function create(resource: Record<string, unknown>): Promise<string> {
  const r = await s.http.post(`${s.base}/${resource.resourceType}`).set('Content-Type', FHIR_JSON).send(resource);
  expect(r.status).toBe(201);
  return r.body.id;
}

const idOf = (location: string) => /^[A-Za-z]+\/([^/]+)\/_history\/\d+$/.exec(location)![1];

describe('transaction', () => {
  test('urn:uuid references are rewritten to the assigned ids; response entries follow request order', async () => {
    const pUrn = urn();
    const oUrn = urn();
    const div = `<div xmlns="http://www.w3.org/1999/xhtml">About <a href="${pUrn}">the patient</a></div>`;
    const b = bundle('transaction', [
      {
        fullUrl: oUrn,
        resource: observation({
          subject: { reference: pUrn },
          text: { status: 'generated', div },
          extension: [{ url: 'http://example.org/fhir/StructureDefinition/source', valueUri: pUrn }],
        }),
        request: { method: 'POST', url: 'Observation' },
      },
      {
        fullUrl: pUrn,
        // Identifier.value is a string, not a uri: it must keep the urn (Synthea relies on this).
        resource: patient({ identifier: [{ system: 'urn:ietf:rfc:3986', value: pUrn }] }),
        request: { method: 'POST', url: 'Patient' },
      },
    ]);
    const res = await postBundle(b);
    expect(res.status).toBe(200);
    expect(res.body.resourceType).toBe('Bundle');
    expect(res.body.type).toBe('transaction-response');
    expect(res.body.entry).toHaveLength(2);
    const [o, p] = res.body.entry.map((e: { response: Record<string, string> }) => e.response);
    expect(o.status).toMatch(/^201/);
    expect(o.location).toMatch(/^Observation\/[A-Za-z0-9\-.]+\/_history\/1$/);
    expect(o.etag).toBe('W/"1"');
    expect(o.lastModified).toBeDefined();
    expect(p.status).toMatch(/^201/);
    expect(p.location).toMatch(/^Patient\/[A-Za-z0-9\-.]+\/_history\/1$/);
    expect(p.etag).toBe('W/"1"');
    const pid = idOf(p.location);
    const oid = idOf(o.location);

    const obs = await s.http.get(`${s.base}/Observation/${oid}`);
    expect(obs.status).toBe(200);
    expect(obs.body.subject.reference).toBe(`Patient/${pid}`);
    expect(obs.body.extension[0].valueUri).toBe(`Patient/${pid}`);
    expect(obs.body.text.div).toContain(`href="Patient/${pid}"`);
    expect(JSON.stringify(obs.body)).not.toContain('urn:uuid:');
    const pat = await s.http.get(`${s.base}/Patient/${pid}`);
    expect(pat.status).toBe(200);
    expect(pat.body.identifier[0].value).toBe(pUrn);
    // The reference is searchable under the assigned id.
    expect(await count('Observation', `subject=Patient/${pid}`)).toBe(1);
  });

  test('processing order is DELETE, POST, PUT/PATCH, GET whatever the entry order', async () => {
    const system = sys();
    const x = `ord-x-${randomUUID().slice(0, 8)}`;
    const y = `ord-y-${randomUUID().slice(0, 8)}`;
    const put = await s.http.put(`${s.base}/Patient/${x}`).set('Content-Type', FHIR_JSON).send(patient({ id: x, identifier: [{ system, value: 'x' }] }));
    expect(put.status).toBe(201);

    const res = await postBundle(
      bundle('transaction', [
        { request: { method: 'GET', url: `Patient?identifier=${system}|new` } }, // 0: sees the POST
        { request: { method: 'GET', url: `Patient/${y}` } }, // 1: sees the PUT
        { request: { method: 'GET', url: `Patient?identifier=${system}|x` } }, // 2: X is already deleted
        { resource: patient({ id: y }), request: { method: 'PUT', url: `Patient/${y}` } }, // 3
        { fullUrl: urn(), resource: patient({ identifier: [{ system, value: 'new' }] }), request: { method: 'POST', url: 'Patient' } }, // 4
        { request: { method: 'DELETE', url: `Patient/${x}` } }, // 5: a DELETE of X and a PUT of Y in one bundle
      ]),
    );
    expect(res.status).toBe(200);
    const e = res.body.entry;
    expect(e).toHaveLength(6);
    expect(e.map((x: { response: { status: string } }) => x.response.status.slice(0, 3))).toEqual(['200', '200', '200', '201', '201', '200']);
    expect(e[0].resource.resourceType).toBe('Bundle');
    expect(e[0].resource.type).toBe('searchset');
    const found = (e[0].resource.entry ?? []).map((m: { resource: { id: string } }) => m.resource.id);
    expect(found).toEqual([idOf(e[4].response.location)]);
    expect(e[1].resource).toMatchObject({ resourceType: 'Patient', id: y });
    expect(e[2].resource.entry ?? []).toHaveLength(0);

    expect((await s.http.get(`${s.base}/Patient/${x}`)).status).toBe(410);
    expect((await s.http.get(`${s.base}/Patient/${y}`)).status).toBe(200);
  });

  test('a conditional reference is resolved to its single match', async () => {
    const system = sys();
    const pid = await create(patient({ identifier: [{ system, value: 'v' }] }));
    const res = await postBundle(
      bundle('transaction', [
        {
          fullUrl: urn(),
          resource: observation({ subject: { reference: `Patient?identifier=${system}|v` } }),
          request: { method: 'POST', url: 'Observation' },
        },
      ]),
    );
    expect(res.status).toBe(200);
    const oid = idOf(res.body.entry[0].response.location);
    const obs = await s.http.get(`${s.base}/Observation/${oid}`);
    expect(obs.body.subject.reference).toBe(`Patient/${pid}`);
  });

  test('a conditional update (PUT Type?query) entry: its fullUrl is referenceable, whether it creates or updates', async () => {
    const system = sys();
    const run = async () => {
      const pUrn = urn();
      const res = await postBundle(
        bundle('transaction', [
          {
            fullUrl: urn(),
            resource: observation({ subject: { reference: pUrn } }),
            request: { method: 'POST', url: 'Observation' },
          },
          {
            fullUrl: pUrn,
            resource: patient({ identifier: [{ system, value: 'cu' }] }),
            request: { method: 'PUT', url: `Patient?identifier=${system}|cu` },
          },
        ]),
      );
      expect(res.status).toBe(200);
      const [o, p] = res.body.entry.map((e: { response: { status: string; location: string } }) => e.response);
      const obs = await s.http.get(`${s.base}/${o.location}`);
      return { patientStatus: p.status.slice(0, 3), patient: p.location.split('/').slice(0, 2).join('/'), subject: obs.body.subject.reference };
    };
    const first = await run(); // 0 matches: creates
    expect(first.patientStatus).toBe('201');
    expect(first.subject).toBe(first.patient);
    const second = await run(); // 1 match: updates that one
    expect(second.patientStatus).toBe('200');
    expect(second.patient).toBe(first.patient);
    expect(second.subject).toBe(first.patient);
    expect(await count('Patient', `identifier=${system}|cu`)).toBe(1);
  });

  test('a conditional reference with no match fails the transaction and writes nothing', async () => {
    const system = sys();
    const before = await historyCount('Observation');
    const res = await postBundle(
      bundle('transaction', [
        { fullUrl: urn(), resource: patient({ identifier: [{ system, value: 'other' }] }), request: { method: 'POST', url: 'Patient' } },
        {
          fullUrl: urn(),
          resource: observation({ identifier: [{ system, value: 'o' }], subject: { reference: `Patient?identifier=${system}|missing` } }),
          request: { method: 'POST', url: 'Observation' },
        },
      ]),
    );
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(JSON.stringify(res.body.issue)).toContain(`Patient?identifier=${system}|missing`);
    expect(await count('Patient', `identifier=${system}|other`)).toBe(0);
    expect(await count('Observation', `identifier=${system}|o`)).toBe(0);
    expect(await historyCount('Observation')).toBe(before);
  });

  test('a conditional reference with two matches is 412', async () => {
    const system = sys();
    await create(patient({ identifier: [{ system, value: 'twin' }] }));
    await create(patient({ identifier: [{ system, value: 'twin' }] }));
    const res = await postBundle(
      bundle('transaction', [
        {
          fullUrl: urn(),
          resource: observation({ identifier: [{ system, value: 'o' }], subject: { reference: `Patient?identifier=${system}|twin` } }),
          request: { method: 'POST', url: 'Observation' },
        },
      ]),
    );
    expect(res.status).toBe(412);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(await count('Observation', `identifier=${system}|o`)).toBe(0);
  });

  test('atomicity: an invalid LAST entry leaves no trace of the earlier entries', async () => {
    const system = sys();
    const b = `atom-${randomUUID().slice(0, 8)}`;
    const pUrn = urn();
    const before = { patients: await historyCount('Patient'), observations: await historyCount('Observation') };
    const res = await postBundle(
      bundle('transaction', [
        { fullUrl: pUrn, resource: patient({ identifier: [{ system, value: 'a' }] }), request: { method: 'POST', url: 'Patient' } },
        { resource: patient({ id: b, identifier: [{ system, value: 'b' }] }), request: { method: 'PUT', url: `Patient/${b}` } },
        {
          fullUrl: urn(),
          resource: observation({ identifier: [{ system, value: 'o' }], subject: { reference: pUrn } }),
          request: { method: 'POST', url: 'Observation' },
        },
        { fullUrl: urn(), resource: patient({ birthDate: 'not-a-date' }), request: { method: 'POST', url: 'Patient' } },
      ]),
    );
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(JSON.stringify(res.body.issue)).toMatch(/entry\[3\]/);
    expect(await count('Patient', `identifier=${system}|a,${system}|b`)).toBe(0);
    expect(await count('Observation', `identifier=${system}|o`)).toBe(0);
    expect((await s.http.get(`${s.base}/Patient/${b}`)).status).toBe(404);
    expect(await historyCount('Patient')).toBe(before.patients);
    expect(await historyCount('Observation')).toBe(before.observations);
  });

  test('the same identity twice is 400 and nothing is written', async () => {
    const id = `dup-${randomUUID().slice(0, 8)}`;
    const twice = await postBundle(
      bundle('transaction', [
        { resource: patient({ id }), request: { method: 'PUT', url: `Patient/${id}` } },
        { resource: patient({ id, active: true }), request: { method: 'PUT', url: `Patient/${id}` } },
      ]),
    );
    expect(twice.status).toBe(400);
    expect(twice.body.resourceType).toBe('OperationOutcome');
    expect((await s.http.get(`${s.base}/Patient/${id}`)).status).toBe(404);

    const deleteAndPut = await postBundle(
      bundle('transaction', [
        { request: { method: 'DELETE', url: `Patient/${id}` } },
        { resource: patient({ id }), request: { method: 'PUT', url: `Patient/${id}` } },
      ]),
    );
    expect(deleteAndPut.status).toBe(400);
    expect((await s.http.get(`${s.base}/Patient/${id}`)).status).toBe(404);
  });

  test('an empty transaction is 200 with an empty transaction-response', async () => {
    const res = await postBundle(bundle('transaction', []));
    expect(res.status).toBe(200);
    expect(res.body.resourceType).toBe('Bundle');
    expect(res.body.type).toBe('transaction-response');
    expect(res.body.entry ?? []).toHaveLength(0);
  });
});

describe('batch', () => {
  test('one failing entry: HTTP 200, that entry has a 4xx status and an outcome, the others succeed', async () => {
    const system = sys();
    const id = `batch-${randomUUID().slice(0, 8)}`;
    const res = await postBundle(
      bundle('batch', [
        { resource: patient({ identifier: [{ system, value: 'ok' }] }), request: { method: 'POST', url: 'Patient' } },
        { resource: patient({ birthDate: 'yesterday' }), request: { method: 'POST', url: 'Patient' } },
        { resource: patient({ id }), request: { method: 'PUT', url: `Patient/${id}` } },
        { request: { method: 'GET', url: 'Patient/does-not-exist' } },
      ]),
    );
    expect(res.status).toBe(200);
    expect(res.body.type).toBe('batch-response');
    const e = res.body.entry;
    expect(e).toHaveLength(4);
    expect(e[0].response.status).toMatch(/^201/);
    expect(e[1].response.status).toMatch(/^4\d\d/);
    expect(e[1].response.outcome.resourceType).toBe('OperationOutcome');
    expect(e[1].response.outcome.issue.length).toBeGreaterThan(0);
    expect(e[2].response.status).toMatch(/^201/);
    expect(e[3].response.status).toMatch(/^404/);
    expect(e[3].response.outcome.resourceType).toBe('OperationOutcome');

    const first = await s.http.get(`${s.base}/${e[0].response.location}`);
    expect(first.status).toBe(200);
    expect(first.body.identifier[0]).toEqual({ system, value: 'ok' });
    const third = await s.http.get(`${s.base}/Patient/${id}`);
    expect(third.status).toBe(200);
    expect(await count('Patient', `identifier=${system}|ok`)).toBe(1);
  });

  test('ifNoneExist: the same batch posted twice creates only once', async () => {
    const system = sys();
    const b = bundle('batch', [
      {
        fullUrl: urn(),
        resource: patient({ identifier: [{ system, value: 'once' }] }),
        request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${system}|once` },
      },
    ]);
    const first = await postBundle(b);
    expect(first.status).toBe(200);
    expect(first.body.entry[0].response.status).toMatch(/^201/);
    const second = await postBundle(b);
    expect(second.status).toBe(200);
    expect(second.body.entry[0].response.status).toMatch(/^200/);
    const id1 = first.body.entry[0].response.location.split('/')[1];
    const id2 = second.body.entry[0].response.location.split('/')[1];
    expect(id2).toBe(id1);
    expect(await count('Patient', `identifier=${system}|once`)).toBe(1);
  });
});
