/**
 * Bearer tokens on every FHIR request: 401 without or with a bad token, 403 for what the scopes
 * or the role do not allow, and patient/ scopes confined to the patient's compartment, through
 * every side door (search, _include, _revinclude, chaining, _has, history, vread, writes, bundles).
 */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { create, matchIds } from './rest-util';

let s: TestServer;
let alice: string; // Patient ids
let bob: string;
let aliceObs: string;
let bobObs: string;
let aliceEnc: string;
let practitioner: string;

beforeAll(async () => {
  s = await startTestServer();
  practitioner = (await create(s, { resourceType: 'Practitioner', name: [{ family: 'Rivera' }] })).id;
  alice = (await create(s, { resourceType: 'Patient', name: [{ family: 'Alison' }], generalPractitioner: [{ reference: `Practitioner/${practitioner}` }] })).id;
  bob = (await create(s, { resourceType: 'Patient', name: [{ family: 'Bobson' }] })).id;
  aliceEnc = (await create(s, { resourceType: 'Encounter', status: 'finished', class: { code: 'AMB' }, subject: { reference: `Patient/${alice}` } })).id;
  const obs = (patient: string, category: string, enc?: string) => ({
    resourceType: 'Observation',
    status: 'final',
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: category }] }],
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: `Patient/${patient}` },
    ...(enc ? { encounter: { reference: `Encounter/${enc}` } } : {}),
  });
  aliceObs = (await create(s, obs(alice, 'vital-signs', aliceEnc))).id;
  await create(s, obs(alice, 'laboratory'));
  bobObs = (await create(s, obs(bob, 'vital-signs'))).id;
});
afterAll(() => s.close());

describe('authentication', () => {
  test('no token: 401 with WWW-Authenticate and an OperationOutcome', async () => {
    const r = await s.anon.get(`${s.base}/Patient`);
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe(`Bearer realm="${s.baseUrl}"`);
    expect(r.body.resourceType).toBe('OperationOutcome');
    expect(r.body.issue[0].code).toBe('login');
  });

  test('a bad, tampered or expired token: 401 invalid_token', async () => {
    const good = await s.token();
    const [h, p, sig] = good.split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    const forged = [h, Buffer.from(JSON.stringify({ ...claims, scope: 'system/*.* extra' })).toString('base64url'), sig].join('.');
    const expired = await s.token({ ttlSeconds: -60 });
    for (const t of ['garbage', forged, expired]) {
      const r = await s.anon.get(`${s.base}/Patient`).set('Authorization', `Bearer ${t}`);
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toMatch(/error="invalid_token"/);
    }
    const basic = await s.anon.get(`${s.base}/Patient`).set('Authorization', 'Basic YTpi');
    expect(basic.status).toBe(401);
  });

  test('discovery stays public: /metadata without a token', async () => {
    const r = await s.anon.get(`${s.base}/metadata`);
    expect(r.status).toBe(200);
    expect(r.body.resourceType).toBe('CapabilityStatement');
  });

  test("another tenant's valid token: 403", async () => {
    const other = await s.newTenant();
    const theirs = await s.token({ tenant: other });
    const r = await s.anon.get(`${s.base}/Patient/${alice}`).set('Authorization', `Bearer ${theirs}`);
    expect(r.status).toBe(403);
    expect(r.body.issue[0].code).toBe('forbidden');
  });
});

describe('scopes', () => {
  test('v1 read scope reads and searches but cannot write; 403 names the scopes', async () => {
    const c = await s.as({ scope: 'system/Patient.read' });
    expect((await c.get(`${s.base}/Patient/${alice}`)).status).toBe(200);
    expect((await c.get(`${s.base}/Patient?family=Alison`)).status).toBe(200);
    const w = await c.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient' });
    expect(w.status).toBe(403);
    expect(w.body.issue[0].diagnostics).toMatch(/system\/Patient\.read/);
    expect((await c.get(`${s.base}/Observation/${aliceObs}`)).status).toBe(403);
  });

  test('v2 scopes: r without s reads but cannot search; c creates', async () => {
    const r = await s.as({ scope: 'system/Patient.r' });
    expect((await r.get(`${s.base}/Patient/${alice}`)).status).toBe(200);
    expect((await r.get(`${s.base}/Patient`)).status).toBe(403);
    const c = await s.as({ scope: 'system/Patient.c' });
    expect((await c.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient' })).status).toBe(201);
    expect((await c.delete(`${s.base}/Patient/${bob}`)).status).toBe(403);
  });

  test('granular v2 scope: only vital signs are reachable', async () => {
    const c = await s.as({ scope: 'system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs' });
    const all = await c.get(`${s.base}/Observation?code=http://loinc.org|8867-4`);
    expect(all.status).toBe(200);
    expect(matchIds(all.body).sort()).toEqual([aliceObs, bobObs].sort());
    const lab = await c.get(`${s.base}/Observation?category=laboratory`);
    expect(matchIds(lab.body)).toEqual([]);
  });

  test('a system/ scope does nothing in a user token', async () => {
    const c = await s.as({ scope: 'system/*.*', fhirUser: `Practitioner/${practitioner}`, role: 'practitioner', sub: 'u1' });
    expect((await c.get(`${s.base}/Patient/${alice}`)).status).toBe(403);
  });
});

describe('patient/ scopes confine to the compartment', () => {
  let c: Awaited<ReturnType<TestServer['as']>>;
  beforeAll(async () => {
    c = await s.as({ scope: 'patient/*.rs launch/patient', patient: alice });
  });

  test('own record yes, another patient no (404, not confirming it exists)', async () => {
    expect((await c.get(`${s.base}/Patient/${alice}`)).status).toBe(200);
    expect((await c.get(`${s.base}/Patient/${bob}`)).status).toBe(404);
    expect((await c.get(`${s.base}/Observation/${aliceObs}`)).status).toBe(200);
    expect((await c.get(`${s.base}/Observation/${bobObs}`)).status).toBe(404);
    expect((await c.get(`${s.base}/Observation/${bobObs}/_history/1`)).status).toBe(404);
    expect((await c.get(`${s.base}/Observation/${bobObs}/_history`)).status).toBe(404);
    expect((await c.get(`${s.base}/Observation/${aliceObs}/_history`)).status).toBe(200);
  });

  test('searches only return the compartment, even with criteria naming someone else', async () => {
    const obs = await c.get(`${s.base}/Observation`);
    expect(matchIds(obs.body).length).toBe(2);
    expect(obs.body.total).toBe(2);
    expect(matchIds((await c.get(`${s.base}/Observation?subject=Patient/${bob}`)).body)).toEqual([]);
    expect(matchIds((await c.get(`${s.base}/Patient`)).body)).toEqual([alice]);
    expect(matchIds((await c.get(`${s.base}/Patient?_id=${bob}`)).body)).toEqual([]);
    const sys = await c.get(`${s.base}?_type=Patient,Observation`);
    expect(sys.status).toBe(200);
    expect(matchIds(sys.body).sort()).toEqual([alice, ...matchIds(obs.body)].sort());
  });

  test('_include/_revinclude, chains and _has never reach another patient', async () => {
    const rev = await c.get(`${s.base}/Patient?_id=${alice}&_revinclude=Observation:subject`);
    const inc = (rev.body.entry ?? []).filter((e: { search: { mode: string } }) => e.search.mode === 'include').map((e: { resource: { id: string } }) => e.resource.id);
    expect(inc.length).toBe(2);
    expect(inc).not.toContain(bobObs);
    // includes of directory types (the practitioner) are fine; of other patients are dropped
    const gp = await c.get(`${s.base}/Patient?_include=Patient:general-practitioner`);
    expect(gp.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toContain(practitioner);
    const chained = await c.get(`${s.base}/Observation?subject:Patient.name=Bobson`);
    expect(matchIds(chained.body)).toEqual([]);
    const has = await c.get(`${s.base}/Patient?_has:Observation:subject:code=8867-4`);
    expect(matchIds(has.body)).toEqual([alice]);
    const wild = await c.get(`${s.base}/Observation?_include=*`);
    for (const e of wild.body.entry ?? []) expect(e.resource.id).not.toBe(bob);
  });

  test('history across resources is refused', async () => {
    expect((await c.get(`${s.base}/Observation/_history`)).status).toBe(403);
    expect((await c.get(`${s.base}/_history`)).status).toBe(403);
  });

  test('read-only scopes cannot write; write scopes cannot write outside the compartment', async () => {
    const ro = await c.post(`${s.base}/Observation`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${alice}` } });
    expect(ro.status).toBe(403);
    const rw = await s.as({ scope: 'patient/*.cruds', patient: alice });
    const mine = { resourceType: 'Observation', status: 'final', code: { text: 'mine' }, subject: { reference: `Patient/${alice}` } };
    expect((await rw.post(`${s.base}/Observation`).set('Content-Type', FHIR_JSON).send(mine)).status).toBe(201);
    const theirs = { ...mine, subject: { reference: `Patient/${bob}` } };
    const bad = await rw.post(`${s.base}/Observation`).set('Content-Type', FHIR_JSON).send(theirs);
    expect(bad.status).toBe(403);
    // moving one's own Observation to another patient is refused too, and nothing changes
    const moved = await rw.put(`${s.base}/Observation/${aliceObs}`).set('Content-Type', FHIR_JSON).send({ ...theirs, id: aliceObs });
    expect(moved.status).toBe(403);
    expect((await s.http.get(`${s.base}/Observation/${aliceObs}`)).body.subject.reference).toBe(`Patient/${alice}`);
    expect((await rw.delete(`${s.base}/Observation/${bobObs}`)).status).toBe(404);
    expect((await s.http.get(`${s.base}/Observation/${bobObs}`)).status).toBe(200);
    // a transaction smuggling another patient's Observation is refused as a whole
    const tx = await rw.post(s.base).set('Content-Type', FHIR_JSON).send({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'POST', url: 'Observation' }, resource: mine },
        { request: { method: 'POST', url: 'Observation' }, resource: theirs },
      ],
    });
    expect(tx.status).toBe(403);
  });

  test('patient/ scopes without a patient in context give nothing', async () => {
    const none = await s.as({ scope: 'patient/*.rs' });
    expect((await none.get(`${s.base}/Patient/${alice}`)).status).toBe(403);
  });
});

describe('roles', () => {
  test('a patient user only reaches their own compartment, whatever scope', async () => {
    const c = await s.as({ scope: 'user/*.cruds', fhirUser: `Patient/${alice}`, role: 'patient', sub: 'alice', patient: bob });
    expect((await c.get(`${s.base}/Patient/${alice}`)).status).toBe(200);
    expect((await c.get(`${s.base}/Patient/${bob}`)).status).toBe(404);
    const own = matchIds((await s.http.get(`${s.base}/Observation?subject=Patient/${alice}`)).body).sort();
    expect(matchIds((await c.get(`${s.base}/Observation`)).body).sort()).toEqual(own);
    expect((await c.delete(`${s.base}/Observation/${aliceObs}`)).status).toBe(403);
    expect((await c.get(`${s.base}/Practitioner/${practitioner}`)).status).toBe(200);
  });

  test('a nurse may not delete; only an admin reads the audit trail; nobody writes it', async () => {
    const nurse = await s.as({ scope: 'user/*.cruds', fhirUser: 'Practitioner/n1', role: 'nurse', sub: 'n1' });
    expect((await nurse.get(`${s.base}/Observation/${bobObs}`)).status).toBe(200);
    expect((await nurse.delete(`${s.base}/Observation/${bobObs}`)).status).toBe(403);
    expect((await nurse.get(`${s.base}/AuditEvent`)).status).toBe(403);
    const admin = await s.as({ scope: 'user/*.cruds', fhirUser: 'Practitioner/a1', role: 'admin', sub: 'a1' });
    expect((await admin.get(`${s.base}/AuditEvent`)).status).toBe(200);
    const w = await admin.post(`${s.base}/AuditEvent`).set('Content-Type', FHIR_JSON).send({ resourceType: 'AuditEvent' });
    expect(w.status).toBe(405);
    expect((await s.http.delete(`${s.base}/AuditEvent/x`)).status).toBe(405);
  });
});
