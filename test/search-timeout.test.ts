/**
 * A search that cannot finish within SEARCH_TIMEOUT_MS is stopped by the database and answered
 * 503 with an OperationOutcome (timeout), and the connection is usable again afterwards. Made
 * deterministic by holding a lock the search must wait for.
 */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer({ SEARCH_TIMEOUT_MS: '500' });
});
afterAll(async () => s?.close());

test('a search beyond SEARCH_TIMEOUT_MS gets 503 timeout, not a hung request', async () => {
  expect((await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', name: [{ family: 'Slowpoke' }] })).status).toBe(201);
  const blocker = await s.db.owner.client.acquireConnection();
  try {
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE idx_string IN ACCESS EXCLUSIVE MODE');
    const t0 = Date.now();
    const r = await s.http.get(`${s.base}/Patient?name=slowpoke`);
    expect(r.status).toBe(503);
    expect(r.body.resourceType).toBe('OperationOutcome');
    expect(r.body.issue[0].code).toBe('timeout');
    expect(Date.now() - t0).toBeLessThan(5000);
  } finally {
    await blocker.query('ROLLBACK');
    await s.db.owner.client.releaseConnection(blocker);
  }
  const ok = await s.http.get(`${s.base}/Patient?name=slowpoke`);
  expect(ok.status).toBe(200);
  expect(ok.body.total).toBe(1);
});
