/** JSON Patch and _history (instance, type, system; paging, _since). */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { create, expectOutcome, link, pathOf, patientWith, uniq } from './rest-util';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s.close());

const PATCH_CT = 'application/json-patch+json';
const patch = (path: string, ops: unknown, ct = PATCH_CT) =>
  s.http.patch(path).set('Content-Type', ct).send(typeof ops === 'string' ? ops : JSON.stringify(ops));

describe('JSON Patch', () => {
  test('replace /active → 200 with a new version holding the change', async () => {
    const c = await create(s, patientWith('urn:t:patch', uniq(), { active: true }));
    const r = await patch(`${s.base}/Patient/${c.id}`, [{ op: 'replace', path: '/active', value: false }]);
    expect(r.status).toBe(200);
    expect(r.headers.etag).toBe('W/"2"');
    expect(r.body.active).toBe(false);
    expect(r.body.meta.versionId).toBe('2');
    expect(r.headers['last-modified']).toBe(new Date(r.body.meta.lastUpdated).toUTCString());
    const read = await s.http.get(`${s.base}/Patient/${c.id}`);
    expect(read.body.active).toBe(false);
    expect(read.body.meta.versionId).toBe('2');
    expect(read.body.identifier).toEqual(c.identifier);
    const v1 = await s.http.get(`${s.base}/Patient/${c.id}/_history/1`);
    expect(v1.body.active).toBe(true);
  });

  test('add / remove / append with "-" work on nested paths', async () => {
    const c = await create(s, patientWith('urn:t:patch', uniq()));
    const r = await patch(`${s.base}/Patient/${c.id}`, [
      { op: 'add', path: '/name/0/given', value: ['Ada'] },
      { op: 'add', path: '/name/0/given/-', value: 'Lovelace' },
      { op: 'remove', path: '/active' },
      { op: 'test', path: '/name/0/family', value: 'Tester' },
    ]);
    expect(r.status).toBe(200);
    expect(r.body.name[0].given).toEqual(['Ada', 'Lovelace']);
    expect(r.body.active).toBeUndefined();
  });

  test('a failing test op → 422 and nothing is written', async () => {
    const c = await create(s, patientWith('urn:t:patch', uniq()));
    const r = await patch(`${s.base}/Patient/${c.id}`, [
      { op: 'test', path: '/active', value: false },
      { op: 'replace', path: '/active', value: false },
    ]);
    expect(r.status).toBe(422);
    expectOutcome(r.body);
    const read = await s.http.get(`${s.base}/Patient/${c.id}`);
    expect(read.body.meta.versionId).toBe('1');
    expect(read.body.active).toBe(true);
  });

  test('malformed patches → 400', async () => {
    const c = await create(s, patientWith('urn:t:patch', uniq()));
    const bad: unknown[] = [
      { op: 'replace', path: '/active', value: false }, // not an array
      [{ op: 'frobnicate', path: '/active' }],
      [{ op: 'replace', path: '/active' }], // no value
      [{ op: 'replace', value: 1 }], // no path
      '[{"op": "replace", ', // not JSON
    ];
    for (const ops of bad) {
      const r = await patch(`${s.base}/Patient/${c.id}`, ops);
      expect([ops, r.status]).toEqual([ops, 400]);
      expectOutcome(r.body);
    }
    expect((await s.http.get(`${s.base}/Patient/${c.id}`)).body.meta.versionId).toBe('1');
  });

  test('wrong Content-Type → 415', async () => {
    const c = await create(s, patientWith('urn:t:patch', uniq()));
    for (const ct of [FHIR_JSON, 'application/json']) {
      const r = await patch(`${s.base}/Patient/${c.id}`, [{ op: 'replace', path: '/active', value: false }], ct);
      expect([ct, r.status]).toEqual([ct, 415]);
      expectOutcome(r.body);
    }
  });

  test('changing id or resourceType → 422; an invalid result → 422', async () => {
    const c = await create(s, patientWith('urn:t:patch', uniq()));
    const id = await patch(`${s.base}/Patient/${c.id}`, [{ op: 'replace', path: '/id', value: 'other' }]);
    expect(id.status).toBe(422);
    expectOutcome(id.body);
    const rt = await patch(`${s.base}/Patient/${c.id}`, [{ op: 'replace', path: '/resourceType', value: 'Organization' }]);
    expect(rt.status).toBe(422);
    const invalid = await patch(`${s.base}/Patient/${c.id}`, [{ op: 'add', path: '/birthDate', value: 'not-a-date' }]);
    expect(invalid.status).toBe(422);
    expectOutcome(invalid.body);
    expect((await s.http.get(`${s.base}/Patient/${c.id}`)).body.meta.versionId).toBe('1');
    expect((await s.http.get(`${s.base}/Patient/other`)).status).toBe(404);
  });

  test('If-Match on patch: stale → 412, current → 200; malformed → 400', async () => {
    const c = await create(s, patientWith('urn:t:patch', uniq()));
    const ops = [{ op: 'replace', path: '/active', value: false }];
    const stale = await patch(`${s.base}/Patient/${c.id}`, ops).set('If-Match', 'W/"3"');
    expect(stale.status).toBe(412);
    expectOutcome(stale.body);
    const bad = await patch(`${s.base}/Patient/${c.id}`, ops).set('If-Match', 'nonsense');
    expect(bad.status).toBe(400);
    const ok = await patch(`${s.base}/Patient/${c.id}`, ops).set('If-Match', 'W/"1"');
    expect(ok.status).toBe(200);
    expect(ok.headers.etag).toBe('W/"2"');
  });

  test('patch of an unknown resource → 404, of a deleted one → 410', async () => {
    const ops = [{ op: 'replace', path: '/active', value: false }];
    const unknown = await patch(`${s.base}/Patient/${uniq('none')}`, ops);
    expect(unknown.status).toBe(404);
    expectOutcome(unknown.body);
    const c = await create(s, patientWith('urn:t:patch', uniq()));
    await s.http.delete(`${s.base}/Patient/${c.id}`).expect(200);
    const gone = await patch(`${s.base}/Patient/${c.id}`, ops);
    expect(gone.status).toBe(410);
    expectOutcome(gone.body);
  });

  test('Prefer: return=minimal on patch', async () => {
    const c = await create(s, patientWith('urn:t:patch', uniq()));
    const r = await patch(`${s.base}/Patient/${c.id}`, [{ op: 'replace', path: '/active', value: false }]).set('Prefer', 'return=minimal');
    expect(r.status).toBe(200);
    expect(r.text ?? '').toBe('');
    expect(r.headers.etag).toBe('W/"2"');
  });
});

describe('_history', () => {
  /** A Patient with `n` versions (create + n-1 updates). */
  async function withVersions(n: number) {
    const c = await create(s, patientWith('urn:t:hist', uniq()));
    const stamps = [c.meta.lastUpdated];
    for (let v = 2; v <= n; v++) {
      const r = await s.http
        .put(`${s.base}/Patient/${c.id}`)
        .set('Content-Type', FHIR_JSON)
        .send({ ...c, meta: undefined, name: [{ family: `V${v}` }] });
      expect(r.status).toBe(200);
      stamps.push(r.body.meta.lastUpdated);
    }
    return { id: c.id, stamps };
  }

  test('instance history: type=history, newest first, request and response on every entry', async () => {
    const { id } = await withVersions(3);
    await s.http.delete(`${s.base}/Patient/${id}`).expect(200);
    const r = await s.http.get(`${s.base}/Patient/${id}/_history`);
    expect(r.status).toBe(200);
    expect(r.body.resourceType).toBe('Bundle');
    expect(r.body.type).toBe('history');
    expect(r.body.total).toBe(4);
    const entries = r.body.entry;
    expect(entries).toHaveLength(4);
    expect(entries.map((e: { response: { etag: string } }) => e.response.etag)).toEqual(['W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']);
    for (const e of entries) {
      expect(e.request.method).toMatch(/^(POST|PUT|DELETE)$/);
      expect(typeof e.request.url).toBe('string');
      expect(e.response.status).toMatch(/^\d{3}/);
      expect(e.response.lastModified).toBeDefined();
      expect(e.search).toBeUndefined();
    }
    expect(entries[0].request.method).toBe('DELETE');
    expect(entries[0].resource).toBeUndefined();
    expect(entries[1].request).toEqual({ method: 'PUT', url: `Patient/${id}` });
    expect(entries[1].resource.meta.versionId).toBe('3');
    expect(entries[1].resource.name[0].family).toBe('V3');
    expect(entries[3].request).toEqual({ method: 'POST', url: 'Patient' });
    expect(entries[3].response.status).toMatch(/^201/);
    const lm = entries.map((e: { response: { lastModified: string } }) => Date.parse(e.response.lastModified));
    expect([...lm].sort((a, b) => b - a)).toEqual(lm);
  });

  test('instance history of an unknown resource → 404', async () => {
    const r = await s.http.get(`${s.base}/Patient/${uniq('none')}/_history`);
    expect(r.status).toBe(404);
    expectOutcome(r.body);
  });

  test('type history holds only that type; system history holds all types, newest first', async () => {
    const p = await create(s, patientWith('urn:t:hist', uniq()));
    const o = await create(s, { resourceType: 'Observation', status: 'final', code: { text: 'x' } });
    const type = await s.http.get(`${s.base}/Patient/_history`);
    expect(type.status).toBe(200);
    expect(type.body.type).toBe('history');
    const typeUrls = type.body.entry.map((e: { fullUrl: string }) => e.fullUrl);
    expect(typeUrls).toContain(`${s.baseUrl}/Patient/${p.id}`);
    expect(typeUrls).not.toContain(`${s.baseUrl}/Observation/${o.id}`);
    for (const e of type.body.entry) expect(e.fullUrl).toMatch(/\/Patient\//);

    const sys = await s.http.get(`${s.base}/_history`);
    expect(sys.status).toBe(200);
    expect(sys.body.type).toBe('history');
    // The audit trail is written concurrently by the server itself (batches sealed with one
    // timestamp); these checks are about the data written here.
    const entries = sys.body.entry.filter((e: { fullUrl: string }) => !e.fullUrl.includes('/AuditEvent/'));
    const urls = entries.map((e: { fullUrl: string }) => e.fullUrl);
    // newest first: the Observation was written last
    expect(urls[0]).toBe(`${s.baseUrl}/Observation/${o.id}`);
    expect(urls[1]).toBe(`${s.baseUrl}/Patient/${p.id}`);
    for (const e of sys.body.entry) {
      expect(e.request).toBeDefined();
      expect(e.response).toBeDefined();
    }
    const lm = entries.map((e: { response: { lastModified: string } }) => Date.parse(e.response.lastModified));
    expect([...lm].sort((a, b) => b - a)).toEqual(lm);
  });

  test('_count=2 paging with next visits every version exactly once; last page has no next', async () => {
    const { id } = await withVersions(5);
    const seen: string[] = [];
    let path: string | undefined = `${s.base}/Patient/${id}/_history?_count=2`;
    let pages = 0;
    while (path) {
      const r = await s.http.get(path);
      expect(r.status).toBe(200);
      expect(r.body.type).toBe('history');
      expect((r.body.entry ?? []).length).toBeLessThanOrEqual(2);
      seen.push(...(r.body.entry ?? []).map((e: { resource: { meta: { versionId: string } } }) => e.resource.meta.versionId));
      const next = link(r.body, 'next');
      path = next ? pathOf(next) : undefined;
      if (++pages > 10) throw new Error('paging does not terminate');
    }
    expect(pages).toBe(3);
    expect(seen).toEqual(['5', '4', '3', '2', '1']);
  });

  test('system history pages visit every entry exactly once', async () => {
    for (let i = 0; i < 3; i++) await create(s, patientWith('urn:t:hist', uniq()));
    const full = await s.http.get(`${s.base}/_history`).query({ _count: 1000 });
    const all = full.body.entry.map((e: { fullUrl: string; response: { etag: string } }) => `${e.fullUrl}@${e.response.etag}`);
    const seen: string[] = [];
    let path: string | undefined = `${s.base}/_history?_count=3`;
    while (path) {
      const r = await s.http.get(path);
      expect(r.status).toBe(200);
      seen.push(...(r.body.entry ?? []).map((e: { fullUrl: string; response: { etag: string } }) => `${e.fullUrl}@${e.response.etag}`));
      const next = link(r.body, 'next');
      path = next ? pathOf(next) : undefined;
    }
    // (the audit trail of these very requests grows meanwhile; it is not what is paged here)
    const data = (l: string[]) => l.filter((e) => !e.includes('/AuditEvent/'));
    expect(data(seen)).toEqual(data(all));
    expect(new Set(seen).size).toBe(seen.length);
  });

  test('_since keeps versions at or after the instant', async () => {
    const { id, stamps } = await withVersions(3);
    const r = await s.http.get(`${s.base}/Patient/${id}/_history`).query({ _since: stamps[1] });
    expect(r.status).toBe(200);
    expect(r.body.entry.map((e: { resource: { meta: { versionId: string } } }) => e.resource.meta.versionId)).toEqual(['3', '2']);
    const future = await s.http.get(`${s.base}/Patient/${id}/_history`).query({ _since: new Date(Date.now() + 86400_000).toISOString() });
    expect(future.status).toBe(200);
    expect(future.body.entry ?? []).toHaveLength(0);
    const sys = await s.http.get(`${s.base}/_history`).query({ _since: stamps[2] });
    expect(sys.status).toBe(200);
    for (const e of sys.body.entry) expect(Date.parse(e.response.lastModified)).toBeGreaterThanOrEqual(Date.parse(stamps[2]));
  });

  test('malformed or repeated history parameters → 400', async () => {
    const { id } = await withVersions(1);
    for (const q of ['_since=yesterday', '_since=2024-13-01T00:00:00Z', '_since=2024-01-01', '_count=-1', '_count=abc', '_count=1&_count=2']) {
      const r = await s.http.get(`${s.base}/Patient/${id}/_history?${q}`);
      expect([q, r.status]).toEqual([q, 400]);
      expectOutcome(r.body);
    }
    const sys = await s.http.get(`${s.base}/_history?_since=garbage`);
    expect(sys.status).toBe(400);
    expect(JSON.stringify(sys.body)).toMatch(/_since/);
  });
});
