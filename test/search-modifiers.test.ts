/**
 * Hand-written search cases from the Checklist of /work/shared/docs/standards/fhir-search.md that
 * rest-search.test.ts and search-advanced.test.ts do not cover: every prefix on Period- and
 * dateTime-valued dates, month/year precision, number and quantity prefixes with implicit
 * precision, uri :below/:above, token :not and :text, :missing on every type, references (absolute,
 * foreign, versioned, :identifier), OR/AND, escaping, malformed values, strict handling.
 */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { create, expectOutcome, matchIds, uniq } from './rest-util';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s.close());

const sorted = (a: string[]) => [...a].sort();

/** Creates resources of one type sharing a fresh identifier system; returns their ids by label. */
async function seed(type: string, items: Record<string, Record<string, unknown>>) {
  const system = `urn:t:${uniq(type.toLowerCase())}`;
  const ids: Record<string, string> = {};
  for (const [label, body] of Object.entries(items)) {
    const r = await create(s, { resourceType: type, identifier: [{ system, value: label }], ...body });
    ids[label] = r.id;
  }
  /** Labels of the matches of `query` (an URL query string, values already encoded) within this seed. */
  const q = async (query: string) => {
    const r = await s.http.get(`${s.base}/${type}?identifier=${encodeURIComponent(system + '|')}&_count=100&${query}`);
    if (r.status !== 200) throw new Error(`${type}?${query}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    const byId = Object.fromEntries(Object.entries(ids).map(([l, id]) => [id, l]));
    return matchIds(r.body).map((id) => byId[id] ?? `?${id}`).sort();
  };
  return { ids, system, q };
}
const enc = encodeURIComponent;

describe('date prefixes', () => {
  test('on a Period (Encounter.period): eq ne gt lt ge le sa eb ap, day/month/year precision', async () => {
    const enc1 = (start?: string, end?: string) => ({ status: 'finished', class: { code: 'AMB' }, period: { ...(start ? { start } : {}), ...(end ? { end } : {}) } });
    const { q } = await seed('Encounter', {
      inside: enc1('2024-05-01T10:00:00Z', '2024-05-01T11:00:00Z'),
      overlapsStart: enc1('2024-04-30T22:00:00Z', '2024-05-01T02:00:00Z'),
      nextDay: enc1('2024-05-02T00:00:00Z', '2024-05-03T00:00:00Z'),
      openEnd: enc1('2024-05-01T12:00:00Z'),
      april: enc1('2024-04-01', '2024-04-15'),
      far: enc1('2010-01-01', '2010-01-02'),
      none: { status: 'finished', class: { code: 'AMB' } },
    });
    expect(await q('date=2024-05-01')).toEqual(['inside']);
    expect(await q('date=eq2024-05-01')).toEqual(['inside']);
    expect(await q('date=ne2024-05-01')).toEqual(sorted(['overlapsStart', 'nextDay', 'openEnd', 'april', 'far']));
    // the range above 2024-05-01 overlaps the target: it ends after the day (an open end is +∞)
    expect(await q('date=gt2024-05-01')).toEqual(sorted(['nextDay', 'openEnd']));
    expect(await q('date=lt2024-05-01')).toEqual(sorted(['overlapsStart', 'april', 'far']));
    expect(await q('date=ge2024-05-01')).toEqual(sorted(['inside', 'nextDay', 'openEnd']));
    expect(await q('date=le2024-05-01')).toEqual(sorted(['inside', 'overlapsStart', 'april', 'far']));
    // sa: starts after the day ends (no overlap); eb: ends before it starts
    expect(await q('date=sa2024-05-01')).toEqual(['nextDay']);
    expect(await q('date=eb2024-05-01')).toEqual(sorted(['april', 'far']));
    // ap: overlaps an approximate range around the day; 2010 is far outside it
    const ap = await q('date=ap2024-05-01');
    expect(ap).toEqual(expect.arrayContaining(['inside', 'overlapsStart', 'nextDay', 'openEnd', 'april']));
    expect(ap).not.toContain('far');
    expect(ap).not.toContain('none');
    // month and year precision: the period must lie within the month / year
    expect(await q('date=2024-05')).toEqual(sorted(['inside', 'nextDay']));
    expect(await q('date=2024')).toEqual(sorted(['inside', 'overlapsStart', 'nextDay', 'april']));
    expect(await q('date=sa2024-04')).toEqual(sorted(['inside', 'nextDay', 'openEnd']));
    expect(await q('date=eb2024-05')).toEqual(sorted(['april', 'far']));
    expect(await q('date=gt2024')).toEqual(['openEnd']);
    // a period touching the search range at one instant
    expect(await q(`date=${enc('ge2024-05-02T00:00:00Z')}`)).toEqual(sorted(['nextDay', 'openEnd']));
    expect(await q(`date=${enc('sa2024-05-01T23:59:59Z')}`)).toEqual(['nextDay']);
  });

  test('on a dateTime (Observation.effective): every prefix, zones, day/month precision of the stored value', async () => {
    const obs = (effective: Record<string, unknown>) => ({ status: 'final', code: { text: 'x' }, ...effective });
    const { q } = await seed('Observation', {
      nine: obs({ effectiveDateTime: '2024-05-01T09:00:00Z' }),
      midnightAfter: obs({ effectiveDateTime: '2024-05-02T00:00:00Z' }),
      day: obs({ effectiveDateTime: '2024-05-01' }),
      month: obs({ effectiveDateTime: '2024-05' }),
      lateLocal: obs({ effectiveDateTime: '2024-05-01T23:30:00-02:00' }), // 2024-05-02T01:30Z
      lastSecondBefore: obs({ effectiveDateTime: '2024-04-30T23:59:59Z' }),
      far: obs({ effectiveDateTime: '2010-06-01T00:00:00Z' }),
      none: obs({}),
    });
    expect(await q('date=2024-05-01')).toEqual(sorted(['nine', 'day']));
    expect(await q('date=ne2024-05-01')).toEqual(sorted(['midnightAfter', 'month', 'lateLocal', 'lastSecondBefore', 'far']));
    expect(await q('date=gt2024-05-01')).toEqual(sorted(['midnightAfter', 'month', 'lateLocal']));
    expect(await q('date=lt2024-05-01')).toEqual(sorted(['lastSecondBefore', 'far']));
    expect(await q('date=ge2024-05-01')).toEqual(sorted(['nine', 'day', 'midnightAfter', 'month', 'lateLocal']));
    expect(await q('date=le2024-05-01')).toEqual(sorted(['nine', 'day', 'lastSecondBefore', 'far']));
    expect(await q('date=sa2024-05-01')).toEqual(sorted(['midnightAfter', 'lateLocal']));
    expect(await q('date=eb2024-05-01')).toEqual(sorted(['lastSecondBefore', 'far']));
    // search.html: lt2013-01-14T10:00 matches a stored 2013-01-14 (part of that day is earlier)
    expect(await q(`date=${enc('lt2024-05-01T10:00Z')}`)).toEqual(sorted(['nine', 'day', 'month', 'lastSecondBefore', 'far']));
    expect(await q(`date=${enc('gt2024-05-01T10:00Z')}`)).toEqual(sorted(['day', 'month', 'midnightAfter', 'lateLocal']));
    // a zone in the search value; `:` URL-escaped or not
    expect(await q(`date=${enc('2024-05-01T23:30:00-02:00')}`)).toEqual(['lateLocal']);
    expect(await q('date=2024-05-02T01:30:00Z')).toEqual(['lateLocal']);
    expect(await q(`date=${enc('2024-05-01T09:00Z')}`)).toEqual(['nine']);
    const ap = await q('date=ap2024-05-01');
    expect(ap).toEqual(expect.arrayContaining(['nine', 'day', 'midnightAfter', 'lateLocal', 'lastSecondBefore']));
    expect(ap).not.toContain('far');
    // month and year precision of the search value
    expect(await q('date=2024-05')).toEqual(sorted(['nine', 'day', 'month', 'midnightAfter', 'lateLocal']));
    expect(await q('date=2024-04')).toEqual(['lastSecondBefore']);
    expect(await q('date=2024')).toEqual(sorted(['nine', 'day', 'month', 'midnightAfter', 'lateLocal', 'lastSecondBefore']));
    expect(await q('date=ge2024-05')).toEqual(sorted(['nine', 'day', 'month', 'midnightAfter', 'lateLocal']));
    expect(await q('date=lt2024')).toEqual(['far']);
  });

  test('Appointment?date=2024-05-01 and a ge/lt range (Checklist)', async () => {
    const patient = await create(s, { resourceType: 'Patient' });
    const appt = (start: string, end: string) => ({ status: 'booked', start, end, participant: [{ status: 'accepted', actor: { reference: `Patient/${patient.id}` } }] });
    const { q } = await seed('Appointment', {
      morning: appt('2024-05-01T09:00:00Z', '2024-05-01T09:30:00Z'),
      lastMinute: appt('2024-05-01T23:59:00Z', '2024-05-02T00:30:00Z'),
      nextDay: appt('2024-05-02T00:00:00Z', '2024-05-02T00:30:00Z'),
      dayBefore: appt('2024-04-30T23:00:00Z', '2024-04-30T23:30:00Z'),
    });
    expect(await q('date=2024-05-01')).toEqual(sorted(['morning', 'lastMinute']));
    expect(await q(`date=${enc('ge2024-05-01T00:00:00Z')}&date=${enc('lt2024-05-02T00:00:00Z')}`)).toEqual(sorted(['morning', 'lastMinute']));
  });
});

describe('number and quantity', () => {
  test('number: implicit precision for eq/ne, exact value for the other prefixes (RiskAssessment.probability)', async () => {
    const patient = await create(s, { resourceType: 'Patient' });
    const ra = (p?: number) => ({ status: 'final', subject: { reference: `Patient/${patient.id}` }, ...(p === undefined ? {} : { prediction: [{ probabilityDecimal: p }] }) });
    const { q } = await seed('RiskAssessment', { p084: ra(0.84), p085: ra(0.85), p075: ra(0.75), p08: ra(0.8), p0749: ra(0.749), none: ra() });
    // 0.8 → [0.75, 0.85): 0.84 yes, 0.85 no (Checklist)
    expect(await q('probability=0.8')).toEqual(sorted(['p084', 'p075', 'p08']));
    expect(await q('probability=eq0.8')).toEqual(sorted(['p084', 'p075', 'p08']));
    expect(await q('probability=0.80')).toEqual(['p08']);
    expect(await q('probability=ne0.8')).toEqual(sorted(['p085', 'p0749']));
    expect(await q('probability=gt0.8')).toEqual(sorted(['p084', 'p085']));
    expect(await q('probability=ge0.8')).toEqual(sorted(['p084', 'p085', 'p08']));
    expect(await q('probability=lt0.8')).toEqual(sorted(['p075', 'p0749']));
    expect(await q('probability=le0.8')).toEqual(sorted(['p075', 'p0749', 'p08']));
    expect(await q('probability=sa0.8')).toEqual(sorted(['p084', 'p085']));
    expect(await q('probability=eb0.8')).toEqual(sorted(['p075', 'p0749']));
    // ap: within 10 % → [0.72, 0.88]
    expect(await q('probability=ap0.8')).toEqual(sorted(['p084', 'p085', 'p075', 'p08', 'p0749']));
    expect(await q('probability=ap0.9')).toEqual(sorted(['p084', 'p085']));
    expect(await q('probability=0.75')).toEqual(sorted(['p075', 'p0749'])); // [0.745, 0.755)
    expect(await q('probability=.8')).toEqual(sorted(['p084', 'p075', 'p08']));
  });

  test('number: exponent notation (search.html: 1e2 → [95, 105))', async () => {
    const patient = await create(s, { resourceType: 'Patient' });
    const ra = (p: number) => ({ status: 'final', subject: { reference: `Patient/${patient.id}` }, prediction: [{ probabilityDecimal: p }] });
    const { q } = await seed('RiskAssessment', { v95: ra(95), v100: ra(100), v104: ra(104.9), v105: ra(105), v94: ra(94.9) });
    expect(await q('probability=1e2')).toEqual(sorted(['v95', 'v100', 'v104']));
    expect(await q('probability=100')).toEqual(['v100']);
    expect(await q('probability=gt1e2')).toEqual(sorted(['v104', 'v105']));
  });

  test('quantity: prefixes, implicit precision, system|code, ||unit', async () => {
    const UCUM = 'http://unitsofmeasure.org';
    const o = (value: number, code = 'mg', system: string | null = UCUM) => ({
      status: 'final',
      code: { text: 'dose' },
      valueQuantity: { value, unit: code, ...(system ? { system, code } : {}) },
    });
    const { q } = await seed('Observation', {
      q54: o(5.4),
      q5: o(5),
      q55: o(5.5),
      q535: o(5.35),
      q545: o(5.45),
      q5349: o(5.349),
      unitOnly: o(5.4, 'mg', null),
      grams: o(5.4, 'g'),
      none: { status: 'final', code: { text: 'dose' } },
    });
    const mg = enc(`|${UCUM}|mg`);
    // 5.4 → [5.35, 5.45), whatever the unit
    expect(await q('value-quantity=5.4')).toEqual(sorted(['q54', 'q535', 'unitOnly', 'grams']));
    expect(await q(`value-quantity=5.4${mg}`)).toEqual(sorted(['q54', 'q535']));
    expect(await q(`value-quantity=5.40${mg}`)).toEqual(['q54']);
    expect(await q(`value-quantity=5${mg}`)).toEqual(sorted(['q54', 'q5', 'q535', 'q545', 'q5349'])); // [4.5, 5.5)
    // Checklist: le5.4|ucum|mg matches 5.4 mg and 5 mg, not 5.5 mg
    expect(await q(`value-quantity=le5.4${mg}`)).toEqual(sorted(['q54', 'q5', 'q535', 'q5349']));
    expect(await q(`value-quantity=lt5.4${mg}`)).toEqual(sorted(['q5', 'q535', 'q5349']));
    expect(await q(`value-quantity=gt5.4${mg}`)).toEqual(sorted(['q55', 'q545']));
    expect(await q(`value-quantity=ge5.4${mg}`)).toEqual(sorted(['q54', 'q55', 'q545']));
    expect(await q(`value-quantity=ne5.4${mg}`)).toEqual(sorted(['q5', 'q55', 'q545', 'q5349']));
    expect(await q(`value-quantity=sa5.4${mg}`)).toEqual(sorted(['q55', 'q545']));
    expect(await q(`value-quantity=eb5.4${mg}`)).toEqual(sorted(['q5', 'q535', 'q5349']));
    expect(await q(`value-quantity=ap5${mg}`)).toEqual(sorted(['q54', 'q5', 'q55', 'q535', 'q545', 'q5349'])); // [4.5, 5.5]
    // ||unit matches the code or the unit; a system alone is not enough for another code
    expect(await q(`value-quantity=5.4${enc('||mg')}`)).toEqual(sorted(['q54', 'q535', 'unitOnly']));
    expect(await q(`value-quantity=5.4${enc(`|${UCUM}|g`)}`)).toEqual(['grams']);
    expect(await q(`value-quantity=5.4${enc('|http://example.org/units|mg')}`)).toEqual([]);
  });
});

describe('uri', () => {
  test('exact (whole string, case-sensitive), :below, :above (ValueSet.url)', async () => {
    const vs = (url?: string) => ({ status: 'active', ...(url ? { url } : {}) });
    const { q } = await seed('ValueSet', {
      v123: vs('http://acme.org/fhir/ValueSet/123'),
      v124: vs('http://acme.org/fhir/ValueSet/124'),
      root: vs('http://acme.org/fhir/'),
      other: vs('http://other.org/fhir/ValueSet/123'),
      upper: vs('http://ACME.org/fhir/ValueSet/123'),
      none: vs(),
    });
    expect(await q(`url=${enc('http://acme.org/fhir/ValueSet/123')}`)).toEqual(['v123']);
    expect(await q(`url=${enc('http://acme.org/fhir/ValueSet/12')}`)).toEqual([]);
    expect(await q(`url:below=${enc('http://acme.org/fhir/')}`)).toEqual(sorted(['v123', 'v124', 'root']));
    expect(await q(`url:below=${enc('http://acme.org/fhir/ValueSet/123')}`)).toEqual(['v123']);
    expect(await q(`url:above=${enc('http://acme.org/fhir/ValueSet/123/_history/5')}`)).toEqual(sorted(['v123', 'root']));
    expect(await q('url:missing=true')).toEqual(['none']);
    expect(await q('url:missing=false')).toEqual(sorted(['v123', 'v124', 'root', 'other', 'upper']));
  });
});

describe('token', () => {
  test(':not on a CodeableConcept: the complement, including resources without a value; OR inside :not', async () => {
    const LOINC = 'http://loinc.org';
    const o = (codes: string[]) => ({ status: 'final', code: { coding: codes.map((code) => ({ system: LOINC, code })) } });
    const { q } = await seed('Observation', {
      a: o(['1234-5']),
      b: o(['9999-9']),
      ab: o(['1234-5', '9999-9']),
      none: { status: 'final', code: { text: 'no coding' } },
    });
    expect(await q('code:not=1234-5')).toEqual(sorted(['b', 'none']));
    expect(await q(`code:not=${enc(`${LOINC}|1234-5`)}`)).toEqual(sorted(['b', 'none']));
    expect(await q(`code:not=${enc('1234-5,9999-9')}`)).toEqual(['none']);
    expect(await q('category:not=vital-signs')).toEqual(sorted(['a', 'b', 'ab', 'none'])); // nobody has a category
  });

  test('Checklist: code=system|code, code, |code; code:text on CodeableConcept.text or Coding.display; _id is exact', async () => {
    const { q, ids } = await seed('Observation', {
      loinc: { status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '1234-5' }] } },
      other: { status: 'final', code: { coding: [{ system: 'http://example.org/codes', code: '1234-5' }] } },
      bare: { status: 'final', code: { coding: [{ code: '1234-5' }] } },
      text: { status: 'final', code: { text: 'Headache' } },
      display: { status: 'final', code: { coding: [{ system: 'http://snomed.info/sct', code: '25064002', display: 'Headache, severe' }] } },
      back: { status: 'final', code: { text: 'Back pain' } },
    });
    expect(await q(`code=${enc('http://loinc.org|1234-5')}`)).toEqual(['loinc']);
    expect(await q('code=1234-5')).toEqual(sorted(['loinc', 'other', 'bare']));
    expect(await q(`code=${enc('|1234-5')}`)).toEqual(['bare']);
    expect(await q('code:text=headache')).toEqual(sorted(['text', 'display']));
    expect(await q('code:text=HEAD')).toEqual(sorted(['text', 'display']));
    expect(await q('code:text=pain')).toEqual([]); // starts-with, like a string
    expect(await q(`_id=${ids.loinc}`)).toEqual(['loinc']);
    expect(await q(`_id=${ids.loinc.toUpperCase()}`)).toEqual(ids.loinc.toUpperCase() === ids.loinc ? ['loinc'] : []);
  });

  test('_id is case-sensitive for client-assigned ids', async () => {
    const id = `abc-${uniq('id')}`;
    const put = await s.http.put(`${s.base}/Patient/${id}`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', id });
    expect([200, 201]).toContain(put.status);
    const r = await s.http.get(`${s.base}/Patient?_id=${id}`);
    expect(matchIds(r.body)).toEqual([id]);
    const upper = await s.http.get(`${s.base}/Patient?_id=${id.toUpperCase()}`);
    expect(matchIds(upper.body)).toEqual([]);
  });
});

describe(':missing on every parameter type', () => {
  test('string, token, date, reference on Patient; _id and _lastUpdated are never missing', async () => {
    const pr = await create(s, { resourceType: 'Practitioner' });
    const { q } = await seed('Patient', {
      full: { name: [{ family: 'Full' }], gender: 'other', birthDate: '2000-01-01', generalPractitioner: [{ reference: `Practitioner/${pr.id}` }] },
      bare: {},
      givenOnly: { name: [{ given: ['Only'] }] },
      displayOnly: { generalPractitioner: [{ display: 'Dr. Nobody' }] },
    });
    expect(await q('family:missing=true')).toEqual(sorted(['bare', 'givenOnly', 'displayOnly']));
    expect(await q('family:missing=false')).toEqual(['full']);
    expect(await q('name:missing=false')).toEqual(sorted(['full', 'givenOnly']));
    expect(await q('gender:missing=true')).toEqual(sorted(['bare', 'givenOnly', 'displayOnly']));
    expect(await q('birthdate:missing=false')).toEqual(['full']);
    // a Reference with only a display has no value for a reference search
    expect(await q('general-practitioner:missing=false')).toEqual(['full']);
    expect(await q('general-practitioner:missing=true')).toEqual(sorted(['bare', 'givenOnly', 'displayOnly']));
    expect(await q('_id:missing=false')).toEqual(sorted(['full', 'bare', 'givenOnly', 'displayOnly']));
    expect(await q('_id:missing=true')).toEqual([]);
    expect(await q('_lastUpdated:missing=true')).toEqual([]);
    expect(await q('_lastUpdated:missing=false')).toEqual(sorted(['full', 'bare', 'givenOnly', 'displayOnly']));
  });

  test('quantity, number, uri', async () => {
    const patient = await create(s, { resourceType: 'Patient' });
    const obs = await seed('Observation', {
      qty: { status: 'final', code: { text: 'x' }, valueQuantity: { value: 1, unit: 'mg' } },
      str: { status: 'final', code: { text: 'x' }, valueString: '1 mg' },
    });
    expect(await obs.q('value-quantity:missing=true')).toEqual(['str']);
    expect(await obs.q('value-quantity:missing=false')).toEqual(['qty']);
    const ra = await seed('RiskAssessment', {
      num: { status: 'final', subject: { reference: `Patient/${patient.id}` }, prediction: [{ probabilityDecimal: 0.5 }] },
      none: { status: 'final', subject: { reference: `Patient/${patient.id}` } },
    });
    expect(await ra.q('probability:missing=true')).toEqual(['none']);
    expect(await ra.q('probability:missing=false')).toEqual(['num']);
    const prof = await seed('Patient', { withProfile: { meta: { profile: ['http://example.org/StructureDefinition/p'] } }, plain: {} });
    expect(await prof.q('_profile:missing=false')).toEqual(['withProfile']);
    expect(await prof.q('_profile:missing=true')).toEqual(['plain']);
  });
});

describe('reference', () => {
  test('absolute URLs: ours equals relative; a foreign server is not ours; _history is ignored', async () => {
    const p = await create(s, { resourceType: 'Patient' });
    const obs = (reference: string) => ({ status: 'final', code: { text: 'x' }, subject: { reference } });
    const foreign = `http://other.example.org/fhir/Patient/${p.id}`;
    const { q } = await seed('Observation', {
      relative: obs(`Patient/${p.id}`),
      ours: obs(`${s.baseUrl}/Patient/${p.id}`),
      versioned: obs(`Patient/${p.id}/_history/1`),
      foreign: obs(foreign),
    });
    expect(await q(`subject=Patient/${p.id}`)).toEqual(sorted(['relative', 'ours', 'versioned']));
    expect(await q(`subject=${enc(`${s.baseUrl}/Patient/${p.id}`)}`)).toEqual(sorted(['relative', 'ours', 'versioned']));
    expect(await q(`patient=${p.id}`)).toEqual(sorted(['relative', 'ours', 'versioned']));
    expect(await q(`subject=${enc(foreign)}`)).toEqual(['foreign']);
    // Checklist: an unknown target is not an error
    expect(await q('subject=Patient/does-not-exist')).toEqual([]);
  });

  test(':identifier matches Reference.identifier like a token', async () => {
    const p = await create(s, { resourceType: 'Patient' });
    const { q } = await seed('Observation', {
      logical: { status: 'final', code: { text: 'x' }, subject: { identifier: { system: 'urn:mrn', value: '12345' } } },
      both: { status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${p.id}`, identifier: { system: 'urn:mrn', value: '67890' } } },
      otherSystem: { status: 'final', code: { text: 'x' }, subject: { identifier: { system: 'urn:other', value: '12345' } } },
      literal: { status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${p.id}` } },
    });
    expect(await q(`subject:identifier=${enc('urn:mrn|12345')}`)).toEqual(['logical']);
    expect(await q('subject:identifier=12345')).toEqual(sorted(['logical', 'otherSystem']));
    expect(await q(`subject:identifier=${enc('urn:mrn|')}`)).toEqual(sorted(['logical', 'both']));
    expect(await q(`subject:identifier=${enc('urn:mrn|67890')}`)).toEqual(['both']);
    expect(await q(`subject=Patient/${p.id}`)).toEqual(sorted(['both', 'literal']));
  });
});

describe('OR, AND, escaping', () => {
  test('Checklist: language=FR,NL (OR) ⊇ language=FR&language=NL (AND)', async () => {
    const lang = (...codes: string[]) => ({ communication: codes.map((code) => ({ language: { coding: [{ system: 'urn:ietf:bcp:47', code }] } })) });
    const { q } = await seed('Patient', { fr: lang('fr'), nl: lang('nl'), both: lang('fr', 'nl'), de: lang('de'), none: {} });
    const or = await q('language=fr,nl');
    const and = await q('language=fr&language=nl');
    expect(or).toEqual(sorted(['fr', 'nl', 'both']));
    expect(and).toEqual(['both']);
    expect(or).toEqual(expect.arrayContaining(and));
    expect(await q('language=fr,nl&language=de')).toEqual([]);
    expect(await q('language=fr,de&gender:missing=true')).toEqual(sorted(['fr', 'both', 'de']));
  });

  test('\\, is a literal comma; \\| a literal pipe; \\\\ a literal backslash', async () => {
    const { q, system } = await seed('Patient', {
      comma: { name: [{ given: ['a,b'] }] },
      a: { name: [{ given: ['a'] }] },
      b: { name: [{ given: ['b'] }] },
      backslash: { name: [{ given: ['c\\d'] }] },
    });
    expect(await q(`given=${enc('a\\,b')}`)).toEqual(['comma']);
    expect(await q(`given=${enc('a,b')}`)).toEqual(sorted(['comma', 'a', 'b']));
    expect(await q(`given:exact=${enc('a\\,b')}`)).toEqual(['comma']);
    expect(await q(`given:exact=${enc('c\\\\d')}`)).toEqual(['backslash']);
    // identifier values holding a pipe
    const pipe = await seed('Patient', { p: { identifier: [{ system: 'urn:esc', value: 'x|y' }] }, x: { identifier: [{ system: 'urn:esc', value: 'x' }] } });
    const ids = async (query: string) => matchIds((await s.http.get(`${s.base}/Patient?${query}`)).body).sort();
    expect(await ids(`identifier=${enc('urn:esc|x\\|y')}`)).toEqual([pipe.ids.p]);
    expect(await ids(`identifier=${enc('x\\|y')}`)).toEqual([pipe.ids.p]);
    expect(await ids(`identifier=${enc('urn:esc|x')}`)).toEqual([pipe.ids.x]);
    expect(system).toBeDefined();
  });
});

describe('errors', () => {
  test.each([
    ['Condition', 'onset-date', '23 May 2009'],
    ['Observation', 'date', '2024-05-01T10'],
    ['Observation', 'date', 'gt'],
    ['RiskAssessment', 'probability', 'abc'],
    ['RiskAssessment', 'probability', 'gt'],
    ['RiskAssessment', 'probability', '0.8.1'],
    ['Observation', 'value-quantity', 'five|http://unitsofmeasure.org|mg'],
    ['Observation', 'value-quantity', 'ge|http://unitsofmeasure.org|mg'],
    ['Patient', '_lastUpdated', 'yesterday'],
    ['Patient', 'gender:missing', 'perhaps'],
    ['Observation', 'subject:NotAType', '123'],
  ])('%s?%s=%s → 400 naming the parameter', async (type, param, value) => {
    const r = await s.http.get(`${s.base}/${type}?${param}=${enc(value)}`);
    expect(r.status).toBe(400);
    expectOutcome(r.body);
    expect(JSON.stringify(r.body.issue)).toContain(param.split(':')[0]);
  });

  test('Prefer: handling=strict rejects parameters the server does not support; lenient ignores them', async () => {
    for (const key of ['not-a-param', '_text', 'subject:Patient.not-a-param']) {
      const strict = await s.http.get(`${s.base}/Observation?${key}=x`).set('Prefer', 'handling=strict');
      expect([key, strict.status]).toEqual([key, 400]);
      expectOutcome(strict.body, 'not-supported');
      const lenient = await s.http.get(`${s.base}/Observation?${key}=x&_count=1`).set('Prefer', 'handling=lenient');
      expect([key, lenient.status]).toEqual([key, 200]);
      const outcome = lenient.body.entry?.find((e: { search?: { mode?: string } }) => e.search?.mode === 'outcome');
      expect(outcome?.resource.issue[0].severity).toBe('warning');
    }
  });
});
