/** Conditional create (If-None-Exist), update, delete and patch. */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { create, expectOutcome, matchIds, patientWith, uniq } from './rest-util';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s.close());

const SYS = 'urn:t:cond';

async function idsWith(value: string, system = SYS): Promise<string[]> {
  const r = await s.http.get(`${s.base}/Patient`).query({ identifier: `${system}|${value}` });
  expect(r.status).toBe(200);
  return matchIds(r.body).sort();
}

const post = (body: unknown, ifNoneExist?: string) => {
  const req = s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON);
  if (ifNoneExist !== undefined) req.set('If-None-Exist', ifNoneExist);
  return req.send(body as object);
};

describe('conditional create (If-None-Exist)', () => {
  test('0 matches → 201 created; 1 match → 200 and nothing created; 2 matches → 412', async () => {
    const v = uniq();
    const first = await post(patientWith(SYS, v), `identifier=${SYS}|${v}`);
    expect(first.status).toBe(201);
    expect(first.headers.location).toBe(`${s.baseUrl}/Patient/${first.body.id}/_history/1`);
    expect(await idsWith(v)).toEqual([first.body.id]);

    const second = await post(patientWith(SYS, v, { gender: 'male' }), `identifier=${SYS}|${v}`);
    expect(second.status).toBe(200);
    expect(second.body.id).toBe(first.body.id);
    expect(second.headers.etag).toBe('W/"1"');
    expect(second.body.gender).toBeUndefined(); // the existing resource, not the posted one
    expect(await idsWith(v)).toEqual([first.body.id]);
    expect((await s.http.get(`${s.base}/Patient/${first.body.id}`)).body.meta.versionId).toBe('1');

    // a second resource with that identifier (plain create), then the conditional create is ambiguous
    await create(s, patientWith(SYS, v));
    const third = await post(patientWith(SYS, v), `identifier=${SYS}|${v}`);
    expect(third.status).toBe(412);
    expectOutcome(third.body);
    expect(await idsWith(v)).toHaveLength(2);
  });

  test('a type prefix in If-None-Exist is tolerated; a deleted match does not count', async () => {
    const v = uniq();
    const a = await create(s, patientWith(SYS, v));
    const r = await post(patientWith(SYS, v), `Patient?identifier=${SYS}|${v}`);
    expect(r.status).toBe(200);
    expect(r.body.id).toBe(a.id);
    await s.http.delete(`${s.base}/Patient/${a.id}`).expect(200);
    const again = await post(patientWith(SYS, v), `identifier=${SYS}|${v}`);
    expect(again.status).toBe(201);
    expect(again.body.id).not.toBe(a.id);
  });

  test('If-None-Exist without any criterion is 400', async () => {
    const r = await post(patientWith(SYS, uniq()), '_count=1');
    expect(r.status).toBe(400);
    expectOutcome(r.body);
  });
});

describe('conditional update (PUT [type]?query)', () => {
  const cput = (query: string, body: unknown) => s.http.put(`${s.base}/Patient?${query}`).set('Content-Type', FHIR_JSON).send(body as object);

  test('0 matches → 201; 1 match → 200 updating it; 2 matches → 412', async () => {
    const v = uniq();
    const q = `identifier=${encodeURIComponent(`${SYS}|${v}`)}`;
    const c = await cput(q, patientWith(SYS, v));
    expect(c.status).toBe(201);
    expect(c.headers.location).toBe(`${s.baseUrl}/Patient/${c.body.id}/_history/1`);
    expect(await idsWith(v)).toEqual([c.body.id]);

    const u = await cput(q, patientWith(SYS, v, { gender: 'female' }));
    expect(u.status).toBe(200);
    expect(u.body.id).toBe(c.body.id);
    expect(u.body.meta.versionId).toBe('2');
    expect(u.body.gender).toBe('female');
    expect(await idsWith(v)).toEqual([c.body.id]);

    await create(s, patientWith(SYS, v));
    const amb = await cput(q, patientWith(SYS, v, { gender: 'male' }));
    expect(amb.status).toBe(412);
    expectOutcome(amb.body);
    expect((await s.http.get(`${s.base}/Patient/${c.body.id}`)).body.gender).toBe('female');
  });

  test('1 match with a body id equal to the match → 200; different id → 400', async () => {
    const v = uniq();
    const a = await create(s, patientWith(SYS, v));
    const q = `identifier=${encodeURIComponent(`${SYS}|${v}`)}`;
    const same = await cput(q, { ...patientWith(SYS, v, { gender: 'other' }), id: a.id });
    expect(same.status).toBe(200);
    expect(same.body.id).toBe(a.id);
    const diff = await cput(q, { ...patientWith(SYS, v), id: 'not-the-match' });
    expect(diff.status).toBe(400);
    expectOutcome(diff.body, 'invalid');
    expect((await s.http.get(`${s.base}/Patient/not-the-match`)).status).toBe(404);
  });

  test('0 matches with a body id → update-as-create with that id (201)', async () => {
    const v = uniq();
    const id = uniq('cu');
    const r = await cput(`identifier=${encodeURIComponent(`${SYS}|${v}`)}`, { ...patientWith(SYS, v), id });
    expect(r.status).toBe(201);
    expect(r.body.id).toBe(id);
    expect(await idsWith(v)).toEqual([id]);
  });

  test('1 match with a stale If-Match → 412', async () => {
    const v = uniq();
    const a = await create(s, patientWith(SYS, v));
    const r = await cput(`identifier=${encodeURIComponent(`${SYS}|${v}`)}`, patientWith(SYS, v, { gender: 'male' })).set('If-Match', 'W/"4"');
    expect(r.status).toBe(412);
    expect((await s.http.get(`${s.base}/Patient/${a.id}`)).body.meta.versionId).toBe('1');
  });

  test('no criteria → 400', async () => {
    const r = await s.http.put(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send(patientWith(SYS, uniq()));
    expect(r.status).toBe(400);
    expectOutcome(r.body);
  });
});

describe('conditional delete', () => {
  test('single match is deleted', async () => {
    const v = uniq();
    const a = await create(s, patientWith(SYS, v));
    const other = await create(s, patientWith(SYS, uniq()));
    const r = await s.http.delete(`${s.base}/Patient`).query({ identifier: `${SYS}|${v}` });
    expect(r.status).toBe(200);
    expectOutcome(r.body);
    expect((await s.http.get(`${s.base}/Patient/${a.id}`)).status).toBe(410);
    expect((await s.http.get(`${s.base}/Patient/${other.id}`)).status).toBe(200);
  });

  test('multiple matches are all deleted (conditionalDelete=multiple)', async () => {
    const v = uniq();
    const a = await create(s, patientWith(SYS, v));
    const b = await create(s, patientWith(SYS, v));
    const c = await create(s, patientWith(SYS, v));
    const r = await s.http.delete(`${s.base}/Patient`).query({ identifier: `${SYS}|${v}` });
    expect(r.status).toBe(200);
    for (const x of [a, b, c]) expect((await s.http.get(`${s.base}/Patient/${x.id}`)).status).toBe(410);
    expect(await idsWith(v)).toEqual([]);
  });

  test('no match → 200, nothing deleted; no criteria → 400', async () => {
    const keep = await create(s, patientWith(SYS, uniq()));
    const r = await s.http.delete(`${s.base}/Patient`).query({ identifier: `${SYS}|${uniq('none')}` });
    expect(r.status).toBe(200);
    expect((await s.http.get(`${s.base}/Patient/${keep.id}`)).status).toBe(200);
    const all = await s.http.delete(`${s.base}/Patient`);
    expect(all.status).toBe(400);
    expectOutcome(all.body);
    expect((await s.http.get(`${s.base}/Patient/${keep.id}`)).status).toBe(200);
  });

  test('the capability statement declares conditionalDelete', async () => {
    const r = await s.http.get(`${s.base}/metadata`);
    expect(r.status).toBe(200);
    const p = r.body.rest[0].resource.find((x: { type: string }) => x.type === 'Patient');
    expect(p.conditionalDelete).toBe('multiple');
  });
});

describe('conditional patch', () => {
  const cpatch = (query: string, ops: unknown) =>
    s.http.patch(`${s.base}/Patient?${query}`).set('Content-Type', 'application/json-patch+json').send(JSON.stringify(ops));
  const ops = [{ op: 'replace', path: '/active', value: false }];

  test('0 matches → 404; 1 → 200 patched; 2 → 412', async () => {
    const v = uniq();
    const q = `identifier=${encodeURIComponent(`${SYS}|${v}`)}`;
    const none = await cpatch(q, ops);
    expect(none.status).toBe(404);
    expectOutcome(none.body, 'not-found');

    const a = await create(s, patientWith(SYS, v));
    const one = await cpatch(q, ops);
    expect(one.status).toBe(200);
    expect(one.body.id).toBe(a.id);
    expect(one.body.active).toBe(false);
    expect(one.headers.etag).toBe('W/"2"');

    await create(s, patientWith(SYS, v));
    const two = await cpatch(q, [{ op: 'replace', path: '/active', value: true }]);
    expect(two.status).toBe(412);
    expectOutcome(two.body);
    expect((await s.http.get(`${s.base}/Patient/${a.id}`)).body.active).toBe(false);
  });
});

// docs/decisions.md: unknown parameters in a conditional interaction are an error, never ignored.
describe('unknown parameters in conditional interactions', () => {
  test('create / update / delete / patch with an unknown parameter → 400 and nothing changes', async () => {
    const v = uniq();
    const a = await create(s, patientWith(SYS, v));
    const q = `identifier=${encodeURIComponent(`${SYS}|${v}`)}&no-such-param=1`;
    const c = await post(patientWith(SYS, v), q);
    expect(c.status).toBe(400);
    expectOutcome(c.body);
    const u = await s.http.put(`${s.base}/Patient?${q}`).set('Content-Type', FHIR_JSON).send(patientWith(SYS, v, { gender: 'male' }));
    expect(u.status).toBe(400);
    const d = await s.http.delete(`${s.base}/Patient?${q}`);
    expect(d.status).toBe(400);
    const p = await s.http
      .patch(`${s.base}/Patient?${q}`)
      .set('Content-Type', 'application/json-patch+json')
      .send(JSON.stringify([{ op: 'replace', path: '/active', value: false }]));
    expect(p.status).toBe(400);
    expect(await idsWith(v)).toEqual([a.id]);
    const read = await s.http.get(`${s.base}/Patient/${a.id}`);
    expect(read.body.meta.versionId).toBe('1');
  });
});
