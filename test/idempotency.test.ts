/** Idempotency-Key on POST: replay, mismatch, concurrency, expiry. */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { expectOutcome, matchIds, patientWith, uniq } from './rest-util';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s.close());

const SYS = 'urn:t:idem';

function postWithKey(server: TestServer, key: string, body: unknown, base = server.base, path = '/Patient') {
  return server.http.post(`${base}${path}`).set('Content-Type', FHIR_JSON).set('Idempotency-Key', key).send(body as object);
}

async function idsWith(server: TestServer, value: string, base = server.base): Promise<string[]> {
  const r = await server.http.get(`${base}/Patient`).query({ identifier: `${SYS}|${value}` });
  expect(r.status).toBe(200);
  return matchIds(r.body);
}

test('same key + same body → the same answer and only one resource', async () => {
  const value = uniq();
  const key = uniq('key');
  const body = patientWith(SYS, value);
  const first = await postWithKey(s, key, body);
  expect(first.status).toBe(201);
  const second = await postWithKey(s, key, body);
  expect(second.status).toBe(first.status);
  expect(second.body).toEqual(first.body);
  expect(second.headers.etag).toBe(first.headers.etag);
  expect(second.headers.location).toBe(first.headers.location);
  expect(second.headers['last-modified']).toBe(first.headers['last-modified']);
  expect(second.headers['content-type']).toMatch(/^application\/fhir\+json/);
  const third = await postWithKey(s, key, body);
  expect(third.body.id).toBe(first.body.id);
  expect(await idsWith(s, value)).toEqual([first.body.id]);
});

test('same key + different body → 422 OperationOutcome, nothing created', async () => {
  const value = uniq();
  const key = uniq('key');
  const first = await postWithKey(s, key, patientWith(SYS, value));
  expect(first.status).toBe(201);
  const other = await postWithKey(s, key, patientWith(SYS, value, { gender: 'male' }));
  expect(other.status).toBe(422);
  expectOutcome(other.body, 'business-rule');
  // a different resource type at another URL with the same key is also a different request
  const obs = await postWithKey(s, key, { resourceType: 'Observation', status: 'final', code: { text: 'x' } }, s.base, '/Observation');
  expect(obs.status).toBe(422);
  expect(await idsWith(s, value)).toEqual([first.body.id]);
});

test('different keys → different resources; no key → a new resource every time', async () => {
  const value = uniq();
  const body = patientWith(SYS, value);
  const a = await postWithKey(s, uniq('key'), body);
  const b = await postWithKey(s, uniq('key'), body);
  const c = await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send(body);
  expect(new Set([a.body.id, b.body.id, c.body.id]).size).toBe(3);
  expect((await idsWith(s, value)).sort()).toEqual([a.body.id, b.body.id, c.body.id].sort());
});

test('10 concurrent identical requests with one key → one resource, all answers name it', async () => {
  const value = uniq();
  const key = uniq('key');
  const body = patientWith(SYS, value);
  const results = await Promise.all(Array.from({ length: 10 }, () => postWithKey(s, key, body)));
  const statuses = results.map((r) => r.status);
  expect(statuses).toEqual(Array(10).fill(201));
  const ids = new Set(results.map((r) => r.body.id));
  expect(ids.size).toBe(1);
  expect(new Set(results.map((r) => r.headers.location)).size).toBe(1);
  expect(await idsWith(s, value)).toEqual([...ids]);
});

test('an error is not stored: after a failed attempt the same key can succeed', async () => {
  const value = uniq();
  const key = uniq('key');
  const bad = await postWithKey(s, key, { resourceType: 'Patient', identifier: [{ system: SYS, value }], birthDate: 'garbage' });
  expect(bad.status).toBe(422);
  const good = await postWithKey(s, key, patientWith(SYS, value));
  expect(good.status).toBe(201);
  expect(await idsWith(s, value)).toEqual([good.body.id]);
});

test('keys are per tenant', async () => {
  const other = await s.newTenant();
  const value = uniq();
  const key = uniq('key');
  const body = patientWith(SYS, value);
  const a = await postWithKey(s, key, body);
  const b = await postWithKey(s, key, body, `/fhir/${other}`);
  expect(a.status).toBe(201);
  expect(b.status).toBe(201);
  expect(b.headers.location).toContain(`/fhir/${other}/`);
  expect(await idsWith(s, value, `/fhir/${other}`)).toEqual([b.body.id]);
  expect(await idsWith(s, value)).toEqual([a.body.id]);
});

test('a transaction Bundle with a key is applied once', async () => {
  const value = uniq();
  const key = uniq('key');
  const bundle = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [{ fullUrl: 'urn:uuid:4b0e1f5c-1111-4c3a-9a55-0e1c2d3f4a5b', resource: patientWith(SYS, value), request: { method: 'POST', url: 'Patient' } }],
  };
  const first = await postWithKey(s, key, bundle, s.base, '');
  expect(first.status).toBe(200);
  const second = await postWithKey(s, key, bundle, s.base, '');
  expect(second.status).toBe(200);
  expect(second.body).toEqual(first.body);
  expect(await idsWith(s, value)).toHaveLength(1);
});

test('an over-long key → 400', async () => {
  const r = await postWithKey(s, 'k'.repeat(256), patientWith(SYS, uniq()));
  expect(r.status).toBe(400);
  expectOutcome(r.body);
});

describe('expiry', () => {
  let short: TestServer;
  beforeAll(async () => {
    short = await startTestServer({ IDEMPOTENCY_TTL_SECONDS: '1' });
  });
  afterAll(async () => short.close());

  test('after the TTL the same key creates a new resource', async () => {
    const value = uniq();
    const key = uniq('key');
    const body = patientWith(SYS, value);
    const first = await postWithKey(short, key, body);
    expect(first.status).toBe(201);
    const replay = await postWithKey(short, key, body);
    expect(replay.body.id).toBe(first.body.id);
    await new Promise((r) => setTimeout(r, 1500));
    const after = await postWithKey(short, key, body);
    expect(after.status).toBe(201);
    expect(after.body.id).not.toBe(first.body.id);
    expect((await idsWith(short, value)).sort()).toEqual([first.body.id, after.body.id].sort());
    // and the key now replays the new answer
    const again = await postWithKey(short, key, body);
    expect(again.body.id).toBe(after.body.id);
  });
});
