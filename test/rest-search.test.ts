/** Search basics over HTTP: string, token, date, reference, _id, _lastUpdated, :missing, paging, POST _search. */
import { startTestServer, TestServer } from './helpers/test-server';
import { create, expectOutcome, followPages, link, matchIds, uniq } from './rest-util';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s.close());

/** Creates patients sharing one fresh identifier system, so a test can scope searches to its own data. */
async function seed(list: Array<Record<string, unknown>>) {
  const system = `urn:t:${uniq('search')}`;
  const ids: string[] = [];
  for (const [i, extra] of list.entries()) {
    const p = await create(s, { resourceType: 'Patient', identifier: [{ system, value: `v${i}` }], ...extra });
    ids.push(p.id);
  }
  return { system, scope: `${system}|`, ids };
}

async function search(type: string, query: Record<string, string | string[]> | string) {
  const r = await s.http.get(`${s.base}/${type}${typeof query === 'string' ? '?' + query : ''}`).query(typeof query === 'string' ? {} : query);
  expect(r.status).toBe(200);
  expect(r.body.resourceType).toBe('Bundle');
  expect(r.body.type).toBe('searchset');
  return r.body;
}

const sorted = (a: string[]) => [...a].sort();

describe('string', () => {
  test('prefix match, case- and accent-insensitive; :exact; :contains', async () => {
    const { scope, ids } = await seed([
      { name: [{ family: 'Élise', given: ['Marie'] }] },
      { name: [{ family: 'Eliseo' }] },
      { name: [{ family: 'Delise' }] },
      { name: [{ family: 'Other', given: ['Elisa'] }] },
    ]);
    const [elise, eliseo, delise, other] = ids;
    const q = (p: Record<string, string>) => search('Patient', { identifier: scope, ...p }).then((b) => sorted(matchIds(b)));

    expect(await q({ family: 'elise' })).toEqual(sorted([elise, eliseo]));
    expect(await q({ family: 'ELISE' })).toEqual(sorted([elise, eliseo]));
    expect(await q({ family: 'élise' })).toEqual(sorted([elise, eliseo]));
    expect(await q({ family: 'eli' })).toEqual(sorted([elise, eliseo]));
    expect(await q({ name: 'elis' })).toEqual(sorted([elise, eliseo, other])); // name covers given too
    expect(await q({ given: 'mar' })).toEqual([elise]);
    expect(await q({ 'family:exact': 'Élise' })).toEqual([elise]);
    expect(await q({ 'family:exact': 'élise' })).toEqual([]);
    expect(await q({ 'family:exact': 'Elise' })).toEqual([]);
    expect(await q({ 'family:contains': 'lis' })).toEqual(sorted([elise, eliseo, delise]));
    expect(await q({ 'family:contains': 'ELIS' })).toEqual(sorted([elise, eliseo, delise]));
    expect(await q({ family: 'lis' })).toEqual([]);
    // OR with a comma
    expect(await q({ family: 'delise,other' })).toEqual(sorted([delise, other]));
  });

  test('LIKE wildcards in the value are literal', async () => {
    const { scope } = await seed([{ name: [{ family: 'Percent' }] }]);
    const b = await search('Patient', { identifier: scope, family: '%' });
    expect(matchIds(b)).toEqual([]);
    const u = await search('Patient', { identifier: scope, family: '_ercent' });
    expect(matchIds(u)).toEqual([]);
  });
});

describe('token', () => {
  test('system|code, |code, code, system|, :not', async () => {
    const sysA = `urn:t:${uniq('a')}`;
    const sysB = `urn:t:${uniq('b')}`;
    const code = uniq('code');
    const withA = await create(s, { resourceType: 'Patient', identifier: [{ system: sysA, value: code }], gender: 'female' });
    const withB = await create(s, { resourceType: 'Patient', identifier: [{ system: sysB, value: code }], gender: 'male' });
    const noSys = await create(s, { resourceType: 'Patient', identifier: [{ value: code }] });
    const ids = async (q: Record<string, string | string[]>) => sorted(matchIds(await search('Patient', q)));

    expect(await ids({ identifier: `${sysA}|${code}` })).toEqual([withA.id]);
    expect(await ids({ identifier: `${sysB}|${code}` })).toEqual([withB.id]);
    expect(await ids({ identifier: `|${code}` })).toEqual([noSys.id]);
    expect(await ids({ identifier: code })).toEqual(sorted([withA.id, withB.id, noSys.id]));
    expect(await ids({ identifier: `${sysA}|` })).toEqual([withA.id]);
    expect(await ids({ identifier: `${sysA}|other` })).toEqual([]);
    // :not keeps resources without the element too
    expect(await ids({ identifier: code, 'gender:not': 'male' })).toEqual(sorted([withA.id, noSys.id]));
    expect(await ids({ identifier: code, gender: 'male' })).toEqual([withB.id]);
    expect(await ids({ identifier: code, gender: 'female,male' })).toEqual(sorted([withA.id, withB.id]));
  });

  test('boolean tokens', async () => {
    const { scope, ids } = await seed([{ active: true }, { active: false }, {}]);
    expect(matchIds(await search('Patient', { identifier: scope, active: 'true' }))).toEqual([ids[0]]);
    expect(matchIds(await search('Patient', { identifier: scope, active: 'false' }))).toEqual([ids[1]]);
  });
});

describe('date', () => {
  test('eq / ge / lt / le / gt on birthDate; a month matches the whole month', async () => {
    const { scope, ids } = await seed([
      { birthDate: '2024-02-29' },
      { birthDate: '2024-03-01' },
      { birthDate: '2024-03-15' },
      { birthDate: '2024-03-31' },
      { birthDate: '2024-04-01' },
      { birthDate: '2024' },
    ]);
    const [feb29, mar1, mar15, mar31, apr1, y2024] = ids;
    const q = async (birthdate: string | string[]) => sorted(matchIds(await search('Patient', { identifier: scope, birthdate })));

    expect(await q('2024-03-15')).toEqual([mar15]);
    expect(await q('eq2024-03-15')).toEqual([mar15]);
    expect(await q('2024-03')).toEqual(sorted([mar1, mar15, mar31]));
    expect(await q('2024')).toEqual(sorted(ids));
    expect(await q('ge2024-03-15')).toEqual(sorted([mar15, mar31, apr1, y2024]));
    expect(await q('gt2024-03-15')).toEqual(sorted([mar31, apr1, y2024]));
    expect(await q('lt2024-03-15')).toEqual(sorted([feb29, mar1, y2024]));
    expect(await q('le2024-03-01')).toEqual(sorted([feb29, mar1, y2024]));
    expect(await q('ne2024-03-15')).toEqual(sorted([feb29, mar1, mar31, apr1, y2024]));
    // AND of two clauses: a range
    expect(await q(['ge2024-03-01', 'lt2024-04-01'])).toEqual(sorted([mar1, mar15, mar31, y2024]));
  });

  test('years below 100 are those years (not 19xx)', async () => {
    const { scope, ids } = await seed([{ birthDate: '1950-06-01' }, { birthDate: '0050-06-01' }]);
    const [modern, ancient] = ids;
    expect(matchIds(await search('Patient', { identifier: scope, birthdate: '0050' }))).toEqual([ancient]);
    expect(matchIds(await search('Patient', { identifier: scope, birthdate: '1950' }))).toEqual([modern]);
    expect(matchIds(await search('Patient', { identifier: scope, birthdate: 'lt1000-01-01' }))).toEqual([ancient]);
  });

  test('malformed date → 400 naming the parameter', async () => {
    for (const v of ['notadate', '2024-13', '2024-02-30', 'ge', '2024-01-01T24:00:00Z', '2024-01-01T10:00:00+15:00']) {
      const r = await s.http.get(`${s.base}/Patient`).query({ birthdate: v });
      expect([v, r.status]).toEqual([v, 400]);
      expectOutcome(r.body, 'invalid');
      expect(JSON.stringify(r.body.issue)).toContain('birthdate');
    }
  });
});

describe('reference', () => {
  test('Type/id, bare id, absolute URL; chained to one type', async () => {
    const p1 = await create(s, { resourceType: 'Patient', name: [{ family: 'RefA' }] });
    const p2 = await create(s, { resourceType: 'Patient', name: [{ family: 'RefB' }] });
    const code = { text: uniq('obs') };
    const o1 = await create(s, { resourceType: 'Observation', status: 'final', code, subject: { reference: `Patient/${p1.id}` } });
    const o2 = await create(s, { resourceType: 'Observation', status: 'final', code, subject: { reference: `${s.baseUrl}/Patient/${p2.id}` } });
    const ids = async (q: Record<string, string>) => sorted(matchIds(await search('Observation', q)));

    expect(await ids({ subject: `Patient/${p1.id}` })).toEqual([o1.id]);
    expect(await ids({ subject: p1.id })).toEqual([o1.id]);
    expect(await ids({ patient: p1.id })).toEqual([o1.id]);
    expect(await ids({ 'subject:Patient': p1.id })).toEqual([o1.id]);
    // an absolute reference to this server indexes like a relative one, both ways
    expect(await ids({ subject: `Patient/${p2.id}` })).toEqual([o2.id]);
    expect(await ids({ subject: `${s.baseUrl}/Patient/${p1.id}` })).toEqual([o1.id]);
    expect(await ids({ subject: `Patient/${p1.id},Patient/${p2.id}` })).toEqual(sorted([o1.id, o2.id]));
    expect(await ids({ subject: `Group/${p1.id}` })).toEqual([]);
  });

  test('bare id on a single-target parameter', async () => {
    const org = await create(s, { resourceType: 'Organization', name: 'Practice' });
    const p = await create(s, { resourceType: 'Patient', managingOrganization: { reference: `Organization/${org.id}` } });
    expect(matchIds(await search('Patient', { organization: org.id }))).toEqual([p.id]);
    expect(matchIds(await search('Patient', { organization: `Organization/${org.id}` }))).toEqual([p.id]);
  });
});

describe('_id, _lastUpdated, :missing', () => {
  test('_id with one or several ids', async () => {
    const { ids } = await seed([{}, {}, {}]);
    expect(matchIds(await search('Patient', { _id: ids[1] }))).toEqual([ids[1]]);
    expect(sorted(matchIds(await search('Patient', { _id: `${ids[0]},${ids[2]}` })))).toEqual(sorted([ids[0], ids[2]]));
    expect(matchIds(await search('Patient', { _id: 'nope-nope' }))).toEqual([]);
  });

  test('_lastUpdated=ge / lt', async () => {
    const { scope, ids } = await seed([{}]);
    await new Promise((r) => setTimeout(r, 20));
    const later = await create(s, { resourceType: 'Patient', identifier: [{ system: scope.slice(0, -1), value: 'later' }] });
    const ge = await search('Patient', { identifier: scope, _lastUpdated: `ge${later.meta.lastUpdated}` });
    expect(matchIds(ge)).toEqual([later.id]);
    const lt = await search('Patient', { identifier: scope, _lastUpdated: `lt${later.meta.lastUpdated}` });
    expect(matchIds(lt)).toEqual([ids[0]]);
    const all = await search('Patient', { identifier: scope, _lastUpdated: 'ge2000-01-01' });
    expect(sorted(matchIds(all))).toEqual(sorted([ids[0], later.id]));
  });

  test(':missing=true / false', async () => {
    const { scope, ids } = await seed([{ birthDate: '1990-01-01' }, {}, { gender: 'male' }]);
    expect(sorted(matchIds(await search('Patient', { identifier: scope, 'birthdate:missing': 'true' })))).toEqual(sorted([ids[1], ids[2]]));
    expect(matchIds(await search('Patient', { identifier: scope, 'birthdate:missing': 'false' }))).toEqual([ids[0]]);
    expect(matchIds(await search('Patient', { identifier: scope, 'gender:missing': 'false' }))).toEqual([ids[2]]);
    const bad = await s.http.get(`${s.base}/Patient`).query({ 'birthdate:missing': 'maybe' });
    expect(bad.status).toBe(400);
    expectOutcome(bad.body);
  });
});

describe('paging and result shaping', () => {
  test('_count=2 over 5 matches: 2 per page, next links visit every match once, total on pages', async () => {
    const { scope, ids } = await seed([{}, {}, {}, {}, {}]);
    const first = await search('Patient', { identifier: scope, _count: '2' });
    expect(first.total).toBe(5);
    expect(matchIds(first)).toHaveLength(2);
    expect(link(first, 'self')).toBeDefined();
    expect(link(first, 'next')).toMatch(/_count=2/);
    const { ids: seen, pages } = await followPages(s, `${s.base}/Patient?identifier=${encodeURIComponent(scope)}&_count=2`);
    expect(pages).toHaveLength(3);
    for (const p of pages) expect(matchIds(p as never).length).toBeLessThanOrEqual(2);
    expect(link(pages[2] as never, 'next')).toBeUndefined();
    expect(seen).toHaveLength(5);
    expect(sorted(seen)).toEqual(sorted(ids));
  });

  test('paging stays correct when resources change between pages', async () => {
    const { scope, ids } = await seed([{}, {}, {}, {}]);
    const first = await search('Patient', { identifier: scope, _count: '2' });
    const seen = matchIds(first);
    // a new match arrives between pages: it is newer, so it shows up at the end, and nobody is visited twice
    const late = await create(s, { resourceType: 'Patient', identifier: [{ system: scope.slice(0, -1), value: 'late' }] });
    const { ids: rest } = await followPages(s, new URL(link(first, 'next')!).pathname + new URL(link(first, 'next')!).search);
    const all = [...seen, ...rest];
    expect(new Set(all).size).toBe(all.length);
    expect(sorted(all)).toEqual(sorted([...ids, late.id]));
  });

  test('_summary=count and _count=0: total, no entries', async () => {
    const { scope } = await seed([{}, {}, {}]);
    const c = await search('Patient', { identifier: scope, _summary: 'count' });
    expect(c.total).toBe(3);
    expect(c.entry).toBeUndefined();
    expect(link(c, 'next')).toBeUndefined();
    const z = await search('Patient', { identifier: scope, _count: '0' });
    expect(z.total).toBe(3);
    expect(z.entry).toBeUndefined();
  });

  test('_summary / _elements in search mark entries SUBSETTED', async () => {
    const { scope } = await seed([{ active: true, gender: 'female', birthDate: '1999-09-09', text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">x</div>' } }]);
    const b = await search('Patient', { identifier: scope, _elements: 'gender' });
    const r = b.entry[0].resource;
    expect(r.gender).toBe('female');
    expect(r.birthDate).toBeUndefined();
    expect(r.meta.tag).toEqual(expect.arrayContaining([expect.objectContaining({ code: 'SUBSETTED' })]));
    const d = await search('Patient', { identifier: scope, _summary: 'data' });
    expect(d.entry[0].resource.text).toBeUndefined();
    expect(d.entry[0].resource.birthDate).toBe('1999-09-09');
  });

  test('_count larger than the maximum is capped; negative or non-numeric _count → 400', async () => {
    const r = await s.http.get(`${s.base}/Patient`).query({ _count: '100000' });
    expect(r.status).toBe(200);
    for (const v of ['-1', 'abc', '1.5']) {
      const b = await s.http.get(`${s.base}/Patient`).query({ _count: v });
      expect([v, b.status]).toEqual([v, 400]);
      expectOutcome(b.body);
    }
  });
});

describe('POST _search, unknown parameters', () => {
  test('POST [type]/_search with a form body returns the same ids as GET', async () => {
    const { scope, ids } = await seed([{ gender: 'female' }, { gender: 'male' }, { gender: 'female' }]);
    const get = await search('Patient', { identifier: scope, gender: 'female' });
    const post = await s.http.post(`${s.base}/Patient/_search`).type('form').send({ identifier: scope, gender: 'female' });
    expect(post.status).toBe(200);
    expect(post.body.type).toBe('searchset');
    expect(sorted(matchIds(post.body))).toEqual(sorted(matchIds(get)));
    expect(sorted(matchIds(post.body))).toEqual(sorted([ids[0], ids[2]]));
    // URL and form parameters combine
    const mixed = await s.http.post(`${s.base}/Patient/_search?gender=female`).type('form').send({ identifier: scope });
    expect(mixed.status).toBe(200);
    expect(sorted(matchIds(mixed.body))).toEqual(sorted([ids[0], ids[2]]));
    // paging a POST search continues with GET next links carrying the form parameters
    const paged = await s.http.post(`${s.base}/Patient/_search`).type('form').send({ identifier: scope, _count: '1' });
    expect(matchIds(paged.body)).toHaveLength(1);
    const next = link(paged.body, 'next')!;
    expect(next).toBeDefined();
    const { ids: rest } = await followPages(s, new URL(next).pathname + new URL(next).search);
    expect(sorted([...matchIds(paged.body), ...rest])).toEqual(sorted(ids));
  });

  test('unknown parameter: ignored with a warning outcome entry; self link without it', async () => {
    const { scope, ids } = await seed([{}]);
    const b = await search('Patient', { identifier: scope, 'not-a-param': 'x' });
    expect(matchIds(b)).toEqual([ids[0]]);
    const oo = b.entry.find((e: { search?: { mode: string } }) => e.search?.mode === 'outcome');
    expect(oo).toBeDefined();
    expect(oo.resource.resourceType).toBe('OperationOutcome');
    expect(oo.resource.issue[0].severity).toBe('warning');
    expect(JSON.stringify(oo.resource)).toContain('not-a-param');
    const self = link(b, 'self')!;
    expect(self).not.toContain('not-a-param');
    expect(decodeURIComponent(self)).toContain(`identifier=${scope}`);
    expect(b.total).toBe(1);
  });

  test('Prefer: handling=strict → 400 for an unknown parameter', async () => {
    const r = await s.http.get(`${s.base}/Patient`).query({ 'not-a-param': 'x' }).set('Prefer', 'handling=strict');
    expect(r.status).toBe(400);
    expectOutcome(r.body);
    expect(JSON.stringify(r.body)).toContain('not-a-param');
    const lenient = await s.http.get(`${s.base}/Patient`).query({ 'not-a-param': 'x' }).set('Prefer', 'handling=lenient');
    expect(lenient.status).toBe(200);
  });

  test('unknown modifier → 400', async () => {
    const r = await s.http.get(`${s.base}/Patient`).query({ 'family:sounds-like': 'x' });
    expect(r.status).toBe(400);
    expectOutcome(r.body);
  });

  test('search results carry fullUrl and search.mode=match', async () => {
    const { scope, ids } = await seed([{}]);
    const b = await search('Patient', { identifier: scope });
    expect(b.entry[0].fullUrl).toBe(`${s.baseUrl}/Patient/${ids[0]}`);
    expect(b.entry[0].search.mode).toBe('match');
  });
});

