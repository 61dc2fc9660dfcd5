/**
 * Searches run in read sessions (server/db/tenant-tx.ts inTenantRead): a pool of their own whose
 * connections keep app.tenant at session level and switch it when another tenant's request takes
 * the connection. With one connection per pool, every search of two tenants shares the same
 * session: each must still see only its own data, also after a failed statement, and a tenant
 * whose slug reaches SQL only through the fixed pattern.
 */
import { FHIR_JSON, startTestServer, TestServer } from './helpers/test-server';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer({ DB_POOL_MAX: '1' });
});
afterAll(async () => s?.close());

async function createPatient(tenant: string, family: string): Promise<string> {
  const r = await s.http.post(`/fhir/${tenant}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', name: [{ family }] });
  expect(r.status).toBe(201);
  return r.body.id;
}

test('interleaved searches of two tenants on one pooled session each see only their own rows', async () => {
  const a = s.tenant;
  const b = await s.newTenant();
  const mine = { [a]: new Set<string>(), [b]: new Set<string>() };
  for (let i = 0; i < 3; i++) {
    mine[a].add(await createPatient(a, 'Sessionshared'));
    mine[b].add(await createPatient(b, 'Sessionshared'));
  }
  // 40 searches in flight, alternating tenants, all through one read connection.
  const results = await Promise.all(
    Array.from({ length: 40 }, (_, i) => {
      const t = i % 2 ? b : a;
      return s.http.get(`/fhir/${t}/Patient?family=sessionshared&_count=50`).then((r) => ({ t, r }));
    }),
  );
  for (const { t, r } of results) {
    expect(r.status).toBe(200);
    const ids = new Set<string>((r.body.entry ?? []).map((e: { resource: { id: string } }) => e.resource.id));
    expect(ids).toEqual(mine[t]);
  }
});

test('a search that fails in the database leaves the session usable and confined', async () => {
  const b = await s.newTenant();
  const id = await createPatient(b, 'Aftererror');
  // A value Postgres rejects only at execution (an out-of-range date) — whatever the answer, the
  // next searches of both tenants on the same session must be right.
  await s.http.get(`/fhir/${b}/Patient?birthdate=99999-01-01`);
  const r1 = await s.http.get(`/fhir/${b}/Patient?family=aftererror`);
  expect(r1.status).toBe(200);
  expect(r1.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual([id]);
  const r2 = await s.http.get(`/fhir/${s.tenant}/Patient?family=aftererror`);
  expect(r2.status).toBe(200);
  expect(r2.body.total).toBe(0);
});
