/** Chaining, reverse chaining, _include/_revinclude, _sort with keyset paging, system search. */
import { startTestServer, TestServer } from './helpers/test-server';
import { create, matchIds, pathOf } from './rest-util';

let s: TestServer;
const ids: Record<string, string> = {};

beforeAll(async () => {
  s = await startTestServer();
  const org = await create(s, { resourceType: 'Organization', name: 'Chain Clinic' });
  ids.org = org.id;
  const pr = await create(s, { resourceType: 'Practitioner', name: [{ family: 'Hartmann' }] });
  ids.pr = pr.id;
  const people = [
    ['Zeller', '1980-01-01', 'male'],
    ['Adams', '1990-05-05', 'female'],
    ['Meyer', '1970-03-03', 'female'],
    ['Brown', undefined, 'male'],
  ] as const;
  for (const [family, birthDate, gender] of people) {
    const p = await create(s, {
      resourceType: 'Patient',
      name: [{ family }],
      gender,
      ...(birthDate ? { birthDate } : {}),
      managingOrganization: { reference: `Organization/${org.id}` },
      generalPractitioner: [{ reference: `Practitioner/${pr.id}` }],
    });
    ids[family] = p.id;
  }
  for (const [who, code, value] of [
    ['Zeller', '8480-6', 120],
    ['Zeller', '8462-4', 80],
    ['Adams', '8480-6', 140],
  ] as const) {
    const o = await create(s, {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code }] },
      subject: { reference: `Patient/${ids[who]}` },
      effectiveDateTime: '2024-03-10T10:00:00Z',
      valueQuantity: { value, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
    });
    ids[`obs-${who}-${code}`] = o.id;
  }
});
afterAll(async () => s.close());

const get = async (q: string) => {
  const r = await s.http.get(`${s.base}/${q}`);
  expect(r.status).toBe(200);
  return r.body;
};

test('chained parameter: Observation?subject:Patient.family=', async () => {
  const b = await get('Observation?subject:Patient.family=zeller');
  expect(matchIds(b).sort()).toEqual([ids['obs-Zeller-8480-6'], ids['obs-Zeller-8462-4']].sort());
  const untyped = await get('Observation?subject.family=adams');
  expect(matchIds(untyped)).toEqual([ids['obs-Adams-8480-6']]);
});

test('multi-level chain: Observation?subject:Patient.organization.name=', async () => {
  const b = await get('Observation?subject:Patient.organization.name=chain');
  expect(matchIds(b)).toHaveLength(3);
  const none = await get('Observation?subject:Patient.organization.name=nowhere');
  expect(matchIds(none)).toHaveLength(0);
});

test('reverse chaining: Patient?_has:Observation:patient:code=', async () => {
  const b = await get('Patient?_has:Observation:patient:code=8462-4');
  expect(matchIds(b)).toEqual([ids.Zeller]);
  const both = await get('Patient?_has:Observation:patient:code=8480-6');
  expect(matchIds(both).sort()).toEqual([ids.Zeller, ids.Adams].sort());
});

test('chains and _has with inner conditions that no index drives (_id, :missing) and with another condition', async () => {
  const byId = await get(`Observation?subject:Patient._id=${ids.Adams}`);
  expect(matchIds(byId)).toEqual([ids['obs-Adams-8480-6']]);
  const noBirth = await get('Observation?subject:Patient.birthdate:missing=true');
  expect(matchIds(noBirth)).toHaveLength(0); // Brown has no birthDate and no Observation
  const hasNoBirth = await get('Patient?birthdate:missing=true&_has:Observation:patient:code=8480-6');
  expect(matchIds(hasNoBirth)).toHaveLength(0);
  const combined = await get(`Observation?subject:Patient.family=zeller&code=8462-4`);
  expect(matchIds(combined)).toEqual([ids['obs-Zeller-8462-4']]);
  const hasById = await get(`Patient?_has:Observation:patient:_id=${ids['obs-Adams-8480-6']}`);
  expect(matchIds(hasById)).toEqual([ids.Adams]);
});

test('a deleted chain target or _has source no longer matches', async () => {
  const p = await create(s, { resourceType: 'Patient', name: [{ family: 'Gonechain' }] });
  const o = await create(s, {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '99999-1' }] },
    subject: { reference: `Patient/${p.id}` },
  });
  expect(matchIds(await get('Observation?subject:Patient.family=gonechain'))).toEqual([o.id]);
  expect(matchIds(await get('Patient?_has:Observation:patient:code=99999-1'))).toEqual([p.id]);
  expect((await s.http.delete(`${s.base}/Observation/${o.id}`)).status).toBe(200);
  expect(matchIds(await get('Patient?_has:Observation:patient:code=99999-1'))).toEqual([]);
  const o2 = await create(s, { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${p.id}` } });
  expect(matchIds(await get('Observation?subject:Patient.family=gonechain'))).toEqual([o2.id]);
  expect((await s.http.delete(`${s.base}/Patient/${p.id}`)).status).toBe(200);
  expect(matchIds(await get('Observation?subject:Patient.family=gonechain'))).toEqual([]);
});

test('_include and _revinclude, with search.mode include', async () => {
  const b = await get(`Observation?_id=${ids['obs-Adams-8480-6']}&_include=Observation:subject`);
  const inc = b.entry.filter((e: { search: { mode: string } }) => e.search.mode === 'include');
  expect(inc.map((e: { resource: { resourceType: string; id: string } }) => `${e.resource.resourceType}/${e.resource.id}`)).toEqual([`Patient/${ids.Adams}`]);
  const rev = await get(`Patient?_id=${ids.Zeller}&_revinclude=Observation:subject`);
  expect(rev.entry.filter((e: { search: { mode: string } }) => e.search.mode === 'include')).toHaveLength(2);
  expect(rev.link[0].url).toContain('_revinclude=Observation%3Asubject');
});

test('_include:iterate follows references of included resources', async () => {
  const b = await get(`Observation?_id=${ids['obs-Adams-8480-6']}&_include=Observation:subject&_include:iterate=Patient:organization`);
  const types = b.entry.filter((e: { search: { mode: string } }) => e.search.mode === 'include').map((e: { resource: { resourceType: string } }) => e.resource.resourceType);
  expect(types.sort()).toEqual(['Organization', 'Patient']);
  const noIterate = await get(`Observation?_id=${ids['obs-Adams-8480-6']}&_include=Observation:subject&_include=Patient:organization`);
  expect(noIterate.entry.filter((e: { search: { mode: string } }) => e.search.mode === 'include')).toHaveLength(1);
});

test('_include=Patient:* includes every reference', async () => {
  const b = await get(`Patient?_id=${ids.Meyer}&_include=Patient:*`);
  const types = b.entry.filter((e: { search: { mode: string } }) => e.search.mode === 'include').map((e: { resource: { resourceType: string } }) => e.resource.resourceType);
  expect(types.sort()).toEqual(['Organization', 'Practitioner']);
});

test('_sort on a parameter, descending, missing values last, with keyset paging', async () => {
  const asc = await get('Patient?organization=' + ids.org + '&_sort=birthdate');
  expect(matchIds(asc)).toEqual([ids.Meyer, ids.Zeller, ids.Adams, ids.Brown]);
  const desc = await get('Patient?organization=' + ids.org + '&_sort=-birthdate');
  expect(matchIds(desc)).toEqual([ids.Adams, ids.Zeller, ids.Meyer, ids.Brown]);
  const byName = await get('Patient?organization=' + ids.org + '&_sort=family');
  expect(matchIds(byName)).toEqual([ids.Adams, ids.Brown, ids.Meyer, ids.Zeller]);
  // page through two at a time: same order, each once
  const seen: string[] = [];
  let next: string | undefined = `${s.base}/Patient?organization=${ids.org}&_sort=gender,-birthdate&_count=2`;
  while (next) {
    const r = await s.http.get(next);
    expect(r.status).toBe(200);
    seen.push(...matchIds(r.body));
    next = r.body.link.find((l: { relation: string }) => l.relation === 'next')?.url;
    if (next) next = pathOf(next);
  }
  expect(seen).toEqual([ids.Adams, ids.Meyer, ids.Zeller, ids.Brown]);
});

test('_sort on an unknown parameter: 400 with handling=strict, otherwise ignored with a warning', async () => {
  const r = await s.http.get(`${s.base}/Patient?_sort=nonsense`).set('Prefer', 'handling=strict');
  expect(r.status).toBe(400);
  const lenient = await get('Patient?_sort=nonsense,family');
  expect(lenient.link[0].url).toContain('_sort=family');
  expect(lenient.link[0].url).not.toContain('nonsense');
  expect(lenient.entry.some((e: { search: { mode: string } }) => e.search.mode === 'outcome')).toBe(true);
});

test('system-level search across types by _id and _lastUpdated', async () => {
  const b = await get(`?_id=${ids.Zeller},${ids.org}`);
  const found = b.entry.map((e: { resource: { resourceType: string } }) => e.resource.resourceType).sort();
  expect(found).toEqual(['Organization', 'Patient']);
  const typed = await get(`?_type=Practitioner&_lastUpdated=ge2000-01-01`);
  expect(matchIds(typed)).toEqual([ids.pr]);
  const bad = await s.http.get(`${s.base}?_type=Nope`);
  expect(bad.status).toBe(404);
});

test('_contained=true is rejected with a clear message; _total=estimate gives a number', async () => {
  const r = await s.http.get(`${s.base}/Patient?_contained=true`);
  expect(r.status).toBe(400);
  expect(r.body.issue[0].diagnostics).toMatch(/_contained/);
  const e = await get('Patient?_total=estimate');
  expect(typeof e.total).toBe('number');
});
