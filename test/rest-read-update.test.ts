/** read, vread, update, delete, $restore, If-Match / If-None-Match / If-Modified-Since, Prefer. */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { create, expectOutcome, matchIds, patientWith, uniq } from './rest-util';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s.close());

const put = (path: string, body: unknown) => s.http.put(path).set('Content-Type', FHIR_JSON).send(body as object);

describe('read and vread', () => {
  test('read returns the resource with ETag/Last-Modified matching meta', async () => {
    const c = await create(s, patientWith('urn:t:read', uniq()));
    const r = await s.http.get(`${s.base}/Patient/${c.id}`);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/fhir\+json/);
    expect(r.body.id).toBe(c.id);
    expect(r.headers.etag).toBe(`W/"${r.body.meta.versionId}"`);
    expect(r.headers['last-modified']).toBe(new Date(r.body.meta.lastUpdated).toUTCString());
  });

  test('vread returns each version; unknown version 404; a deletion version 410', async () => {
    const c = await create(s, patientWith('urn:t:vread', uniq(), { gender: 'female' }));
    const u = await put(`${s.base}/Patient/${c.id}`, { ...c, gender: 'male' });
    expect(u.status).toBe(200);
    const del = await s.http.delete(`${s.base}/Patient/${c.id}`);
    expect(del.status).toBe(200);

    const v1 = await s.http.get(`${s.base}/Patient/${c.id}/_history/1`);
    expect(v1.status).toBe(200);
    expect(v1.body.meta.versionId).toBe('1');
    expect(v1.body.gender).toBe('female');
    expect(v1.headers.etag).toBe('W/"1"');

    const v2 = await s.http.get(`${s.base}/Patient/${c.id}/_history/2`);
    expect(v2.status).toBe(200);
    expect(v2.body.meta.versionId).toBe('2');
    expect(v2.body.gender).toBe('male');

    const v3 = await s.http.get(`${s.base}/Patient/${c.id}/_history/3`);
    expect(v3.status).toBe(410);
    expectOutcome(v3.body, 'deleted');

    const v9 = await s.http.get(`${s.base}/Patient/${c.id}/_history/9`);
    expect(v9.status).toBe(404);
    expectOutcome(v9.body, 'not-found');

    const vx = await s.http.get(`${s.base}/Patient/${c.id}/_history/abc`);
    expect(vx.status).toBe(404);
    expectOutcome(vx.body);

    const unknown = await s.http.get(`${s.base}/Patient/${uniq('nobody')}/_history/1`);
    expect(unknown.status).toBe(404);
    expectOutcome(unknown.body);
  });

  test('read of a deleted resource is 410 and carries the ETag of the deletion', async () => {
    const c = await create(s, patientWith('urn:t:gone', uniq()));
    await s.http.delete(`${s.base}/Patient/${c.id}`).expect(200);
    const r = await s.http.get(`${s.base}/Patient/${c.id}`);
    expect(r.status).toBe(410);
    expectOutcome(r.body, 'deleted');
    expect(r.headers.etag).toBe('W/"2"');
  });

  test('HEAD returns the headers of GET without a body', async () => {
    const c = await create(s, patientWith('urn:t:head', uniq()));
    const r = await s.http.head(`${s.base}/Patient/${c.id}`);
    expect(r.status).toBe(200);
    expect(r.headers.etag).toBe('W/"1"');
    expect(r.text ?? '').toBe('');
  });
});

describe('update', () => {
  test('update is 200 and increments the version; client meta is ignored', async () => {
    const c = await create(s, patientWith('urn:t:upd', uniq()));
    const r = await put(`${s.base}/Patient/${c.id}`, { ...c, active: false, meta: { versionId: '77', lastUpdated: '2001-01-01T00:00:00Z' } });
    expect(r.status).toBe(200);
    expect(r.body.meta.versionId).toBe('2');
    expect(r.body.meta.lastUpdated).not.toBe('2001-01-01T00:00:00Z');
    expect(r.body.active).toBe(false);
    expect(r.headers.etag).toBe('W/"2"');
    expect(r.headers['last-modified']).toBe(new Date(r.body.meta.lastUpdated).toUTCString());
    expect(new Date(r.body.meta.lastUpdated).getTime()).toBeGreaterThan(new Date(c.meta.lastUpdated).getTime());
    const r3 = await put(`${s.base}/Patient/${c.id}`, { ...c, active: true });
    expect(r3.status).toBe(200);
    expect(r3.headers.etag).toBe('W/"3"');
    const read = await s.http.get(`${s.base}/Patient/${c.id}`);
    expect(read.body.meta.versionId).toBe('3');
    expect(read.body.active).toBe(true);
  });

  test('body without id, or with a different id, is 400 with an OperationOutcome', async () => {
    const c = await create(s, patientWith('urn:t:badid', uniq()));
    const { id: _drop, ...noId } = c;
    void _drop;
    const missing = await put(`${s.base}/Patient/${c.id}`, noId);
    expect(missing.status).toBe(400);
    expectOutcome(missing.body, 'invalid');
    const other = await put(`${s.base}/Patient/${c.id}`, { ...c, id: 'someone-else' });
    expect(other.status).toBe(400);
    expectOutcome(other.body, 'invalid');
    // nothing was written
    const read = await s.http.get(`${s.base}/Patient/${c.id}`);
    expect(read.body.meta.versionId).toBe('1');
  });

  test('body of another resource type is rejected (4xx) and nothing is written', async () => {
    const c = await create(s, patientWith('urn:t:badtype', uniq()));
    const r = await put(`${s.base}/Patient/${c.id}`, { resourceType: 'Organization', id: c.id, name: 'x' });
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expectOutcome(r.body);
    const read = await s.http.get(`${s.base}/Patient/${c.id}`);
    expect(read.body.meta.versionId).toBe('1');
  });

  test('update-as-create with a client id is 201 with Location, version 1', async () => {
    const id = uniq('client');
    const r = await put(`${s.base}/Patient/${id}`, { ...patientWith('urn:t:uac', id), id });
    expect(r.status).toBe(201);
    expect(r.headers.location).toBe(`${s.baseUrl}/Patient/${id}/_history/1`);
    expect(r.headers.etag).toBe('W/"1"');
    expect(r.body.id).toBe(id);
    const read = await s.http.get(`${s.base}/Patient/${id}`);
    expect(read.status).toBe(200);
    expect(read.body.meta.versionId).toBe('1');
  });

  test('PUT on a deleted resource revives it with 201 and the next version', async () => {
    const c = await create(s, patientWith('urn:t:revive', uniq()));
    await s.http.delete(`${s.base}/Patient/${c.id}`).expect(200);
    const r = await put(`${s.base}/Patient/${c.id}`, { ...c, active: false });
    expect(r.status).toBe(201);
    expect(r.headers.location).toBe(`${s.baseUrl}/Patient/${c.id}/_history/3`);
    expect(r.body.meta.versionId).toBe('3');
    const read = await s.http.get(`${s.base}/Patient/${c.id}`);
    expect(read.status).toBe(200);
    expect(read.body.active).toBe(false);
  });

  test('invalid id in the URL is 400', async () => {
    const id = 'a'.repeat(65);
    const r = await put(`${s.base}/Patient/${id}`, { resourceType: 'Patient', id });
    expect(r.status).toBe(400);
    expectOutcome(r.body);
  });
});

describe('delete', () => {
  test('delete: 200, read 410, search excludes it, history has a DELETE entry', async () => {
    const value = uniq();
    const c = await create(s, patientWith('urn:t:del', value));
    const before = await s.http.get(`${s.base}/Patient`).query({ identifier: `urn:t:del|${value}` });
    expect(matchIds(before.body)).toEqual([c.id]);

    const del = await s.http.delete(`${s.base}/Patient/${c.id}`);
    expect(del.status).toBe(200);
    expectOutcome(del.body);
    expect(del.headers.etag).toBe('W/"2"');

    expect((await s.http.get(`${s.base}/Patient/${c.id}`)).status).toBe(410);
    const after = await s.http.get(`${s.base}/Patient`).query({ identifier: `urn:t:del|${value}` });
    expect(after.status).toBe(200);
    expect(matchIds(after.body)).toEqual([]);
    expect(after.body.total).toBe(0);

    const h = await s.http.get(`${s.base}/Patient/${c.id}/_history`);
    expect(h.status).toBe(200);
    expect(h.body.entry).toHaveLength(2);
    expect(h.body.entry[0].request).toEqual({ method: 'DELETE', url: `Patient/${c.id}` });
    expect(h.body.entry[0].resource).toBeUndefined();
    expect(h.body.entry[0].response.lastModified).toBeDefined();
    expect(h.body.entry[1].request.method).toBe('POST');
  });

  test('delete of an unknown id, or of an already deleted resource, is 200 (not 404)', async () => {
    const r = await s.http.delete(`${s.base}/Patient/${uniq('never')}`);
    expect(r.status).toBe(200);
    expectOutcome(r.body);
    const c = await create(s, patientWith('urn:t:del2', uniq()));
    await s.http.delete(`${s.base}/Patient/${c.id}`).expect(200);
    const again = await s.http.delete(`${s.base}/Patient/${c.id}`);
    expect(again.status).toBe(200);
    // a second delete must not add a version
    const h = await s.http.get(`${s.base}/Patient/${c.id}/_history`);
    expect(h.body.entry).toHaveLength(2);
  });

  test('delete with a stale If-Match is 412 and leaves the resource', async () => {
    const c = await create(s, patientWith('urn:t:del3', uniq()));
    const r = await s.http.delete(`${s.base}/Patient/${c.id}`).set('If-Match', 'W/"5"');
    expect(r.status).toBe(412);
    expectOutcome(r.body);
    expect((await s.http.get(`${s.base}/Patient/${c.id}`)).status).toBe(200);
  });
});

describe('$restore', () => {
  test('restores a deleted resource as a new version with the old content', async () => {
    const c = await create(s, patientWith('urn:t:restore', uniq(), { gender: 'other' }));
    await s.http.delete(`${s.base}/Patient/${c.id}`).expect(200);
    const r = await s.http.post(`${s.base}/Patient/${c.id}/$restore`);
    expect(r.status).toBe(200);
    expect(r.headers.etag).toBe('W/"3"');
    expect(r.body.meta.versionId).toBe('3');
    expect(r.body.gender).toBe('other');
    const read = await s.http.get(`${s.base}/Patient/${c.id}`);
    expect(read.status).toBe(200);
    expect(read.body.gender).toBe('other');
    expect(read.body.identifier).toEqual(c.identifier);
    expect(read.body.meta.versionId).toBe('3');
  });

  test('on a live resource it is 409; on an unknown one 404', async () => {
    const c = await create(s, patientWith('urn:t:restore2', uniq()));
    const r = await s.http.post(`${s.base}/Patient/${c.id}/$restore`);
    expect(r.status).toBe(409);
    expectOutcome(r.body, 'conflict');
    expect((await s.http.get(`${s.base}/Patient/${c.id}`)).body.meta.versionId).toBe('1');
    const u = await s.http.post(`${s.base}/Patient/${uniq('nobody')}/$restore`);
    expect(u.status).toBe(404);
    expectOutcome(u.body);
  });
});

describe('If-Match', () => {
  test('stale If-Match is 412; the current one is 200 and increments', async () => {
    const c = await create(s, patientWith('urn:t:ifm', uniq()));
    await put(`${s.base}/Patient/${c.id}`, { ...c, active: false }).expect(200); // now v2
    const stale = await put(`${s.base}/Patient/${c.id}`, { ...c, gender: 'male' }).set('If-Match', 'W/"1"');
    expect(stale.status).toBe(412);
    expectOutcome(stale.body);
    const ok = await put(`${s.base}/Patient/${c.id}`, { ...c, gender: 'male' }).set('If-Match', 'W/"2"');
    expect(ok.status).toBe(200);
    expect(ok.headers.etag).toBe('W/"3"');
    expect(ok.body.gender).toBe('male');
  });

  test('If-Match on update of a resource that does not exist is 412', async () => {
    const id = uniq('nope');
    const r = await put(`${s.base}/Patient/${id}`, { resourceType: 'Patient', id }).set('If-Match', 'W/"1"');
    expect(r.status).toBe(412);
    expect((await s.http.get(`${s.base}/Patient/${id}`)).status).toBe(404);
  });

  test('malformed If-Match is 400', async () => {
    const c = await create(s, patientWith('urn:t:ifm2', uniq()));
    for (const bad of ['banana', 'W/"abc"', '"1', 'W/1']) {
      const r = await put(`${s.base}/Patient/${c.id}`, c).set('If-Match', bad);
      expect([bad, r.status]).toEqual([bad, 400]);
      expectOutcome(r.body, 'invalid');
    }
    expect((await s.http.get(`${s.base}/Patient/${c.id}`)).body.meta.versionId).toBe('1');
  });

  // docs/decisions.md: a missing required If-Match is 400 (R4 http.html wording), code "required".
  test('tenant with requireIfMatch: PUT/PATCH without If-Match is 400 "required", with it 200', async () => {
    const t = await s.newTenant();
    await s.setSettings({ requireIfMatch: true }, t);
    const base = `/fhir/${t}`;
    const c = await create(s, patientWith('urn:t:req', uniq()), base);
    const r = await put(`${base}/Patient/${c.id}`, { ...c, active: false });
    expect(r.status).toBe(400);
    expectOutcome(r.body, 'required');
    expect((await s.http.get(`${base}/Patient/${c.id}`)).body.meta.versionId).toBe('1');
    const meta = await s.http.get(`${base}/metadata`);
    expect(meta.body.rest[0].resource.find((x: { type: string }) => x.type === 'Patient').versioning).toBe('versioned-update');
    const ok = await put(`${base}/Patient/${c.id}`, { ...c, active: false }).set('If-Match', 'W/"1"');
    expect(ok.status).toBe(200);
    // patch needs it too
    const p = await s.http
      .patch(`${base}/Patient/${c.id}`)
      .set('Content-Type', 'application/json-patch+json')
      .send(JSON.stringify([{ op: 'replace', path: '/active', value: true }]));
    expect(p.status).toBe(400);
    expectOutcome(p.body, 'required');
    // requireIfMatch covers direct updates only: a conditional update (the client may not know
    // the version) needs none, but a stale one it sends is still checked
    const sys = 'urn:t:req';
    const value = (c.identifier as Array<{ value: string }>)[0].value;
    const cq = `${base}/Patient?identifier=${encodeURIComponent(`${sys}|${value}`)}`;
    const cu = await put(cq, patientWith(sys, value, { gender: 'male' }));
    expect(cu.status).toBe(200);
    expect(cu.body.meta.versionId).toBe('3');
    const cuStale = await put(cq, patientWith(sys, value, { gender: 'female' })).set('If-Match', 'W/"1"');
    expect(cuStale.status).toBe(412);
    // the default test tenant does not require it
    const d = await create(s, patientWith('urn:t:req', uniq()));
    expect((await put(`${s.base}/Patient/${d.id}`, d)).status).toBe(200);
  });
});

describe('conditional read', () => {
  test('If-None-Match with the current ETag is 304 without a body; otherwise 200', async () => {
    const c = await create(s, patientWith('urn:t:inm', uniq()));
    const r = await s.http.get(`${s.base}/Patient/${c.id}`).set('If-None-Match', 'W/"1"');
    expect(r.status).toBe(304);
    expect(r.text ?? '').toBe('');
    expect(r.headers.etag).toBe('W/"1"');
    const star = await s.http.get(`${s.base}/Patient/${c.id}`).set('If-None-Match', '*');
    expect(star.status).toBe(304);
    const other = await s.http.get(`${s.base}/Patient/${c.id}`).set('If-None-Match', 'W/"7"');
    expect(other.status).toBe(200);
    expect(other.body.id).toBe(c.id);
  });

  test('If-Modified-Since at/after lastUpdated is 304; before it 200', async () => {
    const c = await create(s, patientWith('urn:t:ims', uniq()));
    const lm = new Date(c.meta.lastUpdated);
    const same = await s.http.get(`${s.base}/Patient/${c.id}`).set('If-Modified-Since', lm.toUTCString());
    expect(same.status).toBe(304);
    const later = await s.http.get(`${s.base}/Patient/${c.id}`).set('If-Modified-Since', new Date(lm.getTime() + 3600_000).toUTCString());
    expect(later.status).toBe(304);
    const earlier = await s.http.get(`${s.base}/Patient/${c.id}`).set('If-Modified-Since', new Date(lm.getTime() - 3600_000).toUTCString());
    expect(earlier.status).toBe(200);
    expect(earlier.body.id).toBe(c.id);
    const garbage = await s.http.get(`${s.base}/Patient/${c.id}`).set('If-Modified-Since', 'not a date');
    expect(garbage.status).toBe(200);
  });
});

describe('Prefer: return', () => {
  test('return=minimal: no body but the headers', async () => {
    const r = await s.http
      .post(`${s.base}/Patient`)
      .set('Content-Type', FHIR_JSON)
      .set('Prefer', 'return=minimal')
      .send(patientWith('urn:t:pref', uniq()));
    expect(r.status).toBe(201);
    expect(r.text ?? '').toBe('');
    expect(r.headers.location).toMatch(new RegExp(`^${s.baseUrl}/Patient/[^/]+/_history/1$`));
    expect(r.headers.etag).toBe('W/"1"');
    const id = r.headers.location.split('/').slice(-3)[0];
    const u = await put(`${s.base}/Patient/${id}`, { ...patientWith('urn:t:pref', uniq()), id }).set('Prefer', 'return=minimal');
    expect(u.status).toBe(200);
    expect(u.text ?? '').toBe('');
    expect(u.headers.etag).toBe('W/"2"');
  });

  test('return=representation: the stored resource', async () => {
    const r = await s.http
      .post(`${s.base}/Patient`)
      .set('Content-Type', FHIR_JSON)
      .set('Prefer', 'return=representation')
      .send(patientWith('urn:t:pref', uniq()));
    expect(r.status).toBe(201);
    expect(r.body.resourceType).toBe('Patient');
    expect(r.body.meta.versionId).toBe('1');
  });

  test('return=OperationOutcome: an OperationOutcome body on success', async () => {
    const r = await s.http
      .post(`${s.base}/Patient`)
      .set('Content-Type', FHIR_JSON)
      .set('Prefer', 'return=OperationOutcome')
      .send(patientWith('urn:t:pref', uniq()));
    expect(r.status).toBe(201);
    expectOutcome(r.body);
    expect(r.body.issue[0].severity).toBe('information');
    expect(r.headers.location).toBeDefined();
  });

  test('no Prefer: the resource (not an OperationOutcome)', async () => {
    const c = await create(s, patientWith('urn:t:pref', uniq()));
    const u = await put(`${s.base}/Patient/${c.id}`, c);
    expect(u.body.resourceType).toBe('Patient');
  });
});
