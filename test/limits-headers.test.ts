/** Per-tenant request rate limits (429 + Retry-After), security headers and CORS for registered app origins. */
import { startTestServer, TestServer } from './helpers/test-server';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(() => s.close());

test('a tenant over its requests per minute gets 429 with Retry-After; other tenants are not affected', async () => {
  const small = await s.newTenant({ rateLimitPerMinute: 5 });
  const statuses: number[] = [];
  for (let i = 0; i < 5; i++) statuses.push((await s.http.get(`/fhir/${small}/Patient`)).status);
  expect(statuses).toEqual([200, 200, 200, 200, 200]);
  const over = await s.http.get(`/fhir/${small}/Patient`);
  expect(over.status).toBe(429);
  expect(Number(over.headers['retry-after'])).toBeGreaterThanOrEqual(1);
  expect(Number(over.headers['retry-after'])).toBeLessThanOrEqual(60);
  expect(over.body.issue[0].code).toBe('throttled');
  // unauthenticated floods count too
  expect((await s.anon.get(`/fhir/${small}/Patient`)).status).toBe(429);
  expect((await s.http.get(`${s.base}/Patient`)).status).toBe(200);
});

test('security headers on API and portal responses', async () => {
  for (const path of [`${s.base}/metadata`, '/']) {
    const r = await s.anon.get(path);
    expect(r.headers['strict-transport-security']).toMatch(/max-age=31536000/);
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['content-security-policy']).toMatch(/default-src 'self'/);
    expect(r.headers['x-powered-by']).toBeUndefined();
  }
});

test('CORS: a registered app origin may call the API from a browser, others may not', async () => {
  const t = await s.newTenant({ rateLimitPerMinute: 0, corsOrigins: ['https://app.example.org'] });
  const pre = await s.anon
    .options(`/fhir/${t}/Patient`)
    .set('Origin', 'https://app.example.org')
    .set('Access-Control-Request-Method', 'GET')
    .set('Access-Control-Request-Headers', 'authorization');
  expect(pre.status).toBe(204);
  expect(pre.headers['access-control-allow-origin']).toBe('https://app.example.org');
  expect(pre.headers['access-control-allow-headers']).toMatch(/Authorization/);
  const get = await s.http.get(`/fhir/${t}/Patient`).set('Origin', 'https://app.example.org');
  expect(get.headers['access-control-allow-origin']).toBe('https://app.example.org');
  expect(get.headers['access-control-expose-headers']).toMatch(/ETag/);
  const evil = await s.http.get(`/fhir/${t}/Patient`).set('Origin', 'https://evil.example.com');
  expect(evil.headers['access-control-allow-origin']).toBeUndefined();
});
