/**
 * Encryption at rest (server/crypto/): SSNs, payment ids and Composition narrative are unreadable
 * in every table of the database (current rows, history, search index, audit trail), readable
 * through the API on every read path, searchable by exact value (blind index), and stay readable
 * across data key and master key rotation.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { startTestServer, TestServer, FHIR_JSON, TEST_MASTER_KEY } from './helpers/test-server';
import { TEST_DATABASE_URL } from './helpers/db-url';
import { configureEncryption, keysOf, rotateTenantKeys } from '../server/crypto/keyring';
import { ENCRYPTED_EXTENSION } from '../server/crypto/policy';
import { inTenant } from '../server/db/tenant-tx';
import { loadConfig } from '../server/config';
import { reindex } from '../server/search/reindex';

const SSN = 'http://hl7.org/fhir/sid/us-ssn';
const SSN_VALUE = '987-65-4321';
const SSN_DIGITS = '987654321';
const PAYMENT = 'pi_3EncTest0042XyZ';
const NOTE = 'Reports intermittent chest tightness since Tuesday';
const SECRETS = [SSN_DIGITS, SSN_VALUE, PAYMENT, 'chest tightness'];

let s: TestServer;
const ids: Record<string, string> = {};

const patient = {
  resourceType: 'Patient',
  identifier: [
    { system: SSN, value: SSN_VALUE, type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'SS' }] } },
    { system: 'urn:mrn', value: 'MRN-ENC-1' },
  ],
  name: [{ family: 'Cipher', given: ['Ada'] }],
};

function composition(patientId: string) {
  return {
    resourceType: 'Composition',
    status: 'final',
    type: { coding: [{ system: 'http://loinc.org', code: '11506-3' }] },
    subject: { reference: `Patient/${patientId}` },
    date: '2026-11-30T10:00:00Z',
    author: [{ display: 'Dr Demo' }],
    title: 'SOAP note',
    text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${NOTE}</div>` },
    section: [
      { title: 'Subjective', text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${NOTE}</div>` } },
      {
        title: 'Plan',
        section: [{ title: 'Follow-up', text: { status: 'additional', div: '<div xmlns="http://www.w3.org/1999/xhtml">Recheck in 2 weeks</div>' } }],
      },
    ],
  };
}

/** Every row of every table holding tenant data, as text, for this tenant. */
async function tenantRowsAsText(): Promise<Array<{ table: string; text: string }>> {
  const tables = (
    await s.db.owner.raw(
      `SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'`,
    )
  ).rows.map((r: { table_name: string }) => r.table_name) as string[];
  const out: Array<{ table: string; text: string }> = [];
  for (const table of tables) {
    const rows = await inTenant(s.db.owner, s.tenant, async (tx) => (await tx.raw(`SELECT t::text AS text FROM ${table} t WHERE tenant_id = ?`, [s.tenant])).rows);
    for (const r of rows as Array<{ text: string }>) out.push({ table, text: r.text });
  }
  return out;
}

/** AuditEvent.entity.query is base64: decode it so the check reads what it says. */
async function decodedAuditQueries(): Promise<string[]> {
  const rows = await inTenant(s.db.owner, s.tenant, async (tx) => (await tx.raw(`SELECT content::text AS t FROM resources WHERE tenant_id = ? AND res_type = 'AuditEvent'`, [s.tenant])).rows);
  const out: string[] = [];
  for (const r of rows as Array<{ t: string }>) {
    for (const e of JSON.parse(r.t).entity ?? []) if (e.query) out.push(decodeURIComponent(Buffer.from(e.query, 'base64').toString('utf8')));
  }
  return out;
}

async function searchIds(q: string): Promise<string[]> {
  const r = await s.http.get(`${s.base}/${q}`);
  expect(r.status).toBe(200);
  return (r.body.entry ?? []).filter((e: any) => e.search?.mode !== 'include').map((e: any) => e.resource.id).sort();
}

beforeAll(async () => {
  s = await startTestServer();
  const p = await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send(patient);
  expect(p.status).toBe(201);
  ids.patient = p.body.id;
  const c = await s.http.post(`${s.base}/Composition`).set('Content-Type', FHIR_JSON).send(composition(ids.patient));
  expect(c.status).toBe(201);
  ids.composition = c.body.id;
  const inv = await s.http
    .post(`${s.base}/Invoice`)
    .set('Content-Type', FHIR_JSON)
    .send({ resourceType: 'Invoice', status: 'issued', subject: { reference: `Patient/${ids.patient}` }, identifier: [{ system: 'https://stripe.com/payment_intent', value: PAYMENT }] });
  expect(inv.status).toBe(201);
  ids.invoice = inv.body.id;
  // an update and a transaction Bundle (the many-creates path) with secrets too
  const u = await s.http
    .put(`${s.base}/Patient/${ids.patient}`)
    .set('Content-Type', FHIR_JSON)
    .send({ ...patient, id: ids.patient, name: [{ family: 'Cipher', given: ['Ada', 'M'] }] });
  expect(u.status).toBe(200);
  const tx = await s.http
    .post(s.base)
    .set('Content-Type', FHIR_JSON)
    .send({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ fullUrl: 'urn:uuid:6a1e3c2e-0000-4000-8000-000000000001', resource: { resourceType: 'Patient', identifier: [{ system: SSN, value: '111-22-3333' }], name: [{ family: 'Bundled' }] }, request: { method: 'POST', url: 'Patient' } }],
    });
  expect(tx.status).toBe(200);
  ids.bundled = tx.body.entry[0].response.location.split('/')[1];
  // a search by SSN (its query goes to the audit trail)
  expect(await searchIds(`Patient?identifier=${SSN}|${SSN_DIGITS}`)).toEqual([ids.patient]);
  await s.audit.flush();
});
afterAll(async () => s?.close());

test('no table holds an SSN, a payment id or note text in clear (current rows, history, index, audit trail)', async () => {
  const rows = await tenantRowsAsText();
  expect(rows.length).toBeGreaterThan(20);
  const tables = new Set(rows.map((r) => r.table));
  for (const t of ['resources', 'resource_history', 'idx_token', 'tenant_keys']) expect(tables).toContain(t);
  for (const secret of [...SECRETS, '111223333', '111-22-3333']) {
    const leaks = rows.filter((r) => r.text.includes(secret)).map((r) => r.table);
    expect({ secret, leaks }).toEqual({ secret, leaks: [] });
  }
  const queries = await decodedAuditQueries();
  expect(queries.some((q) => q.includes('us-ssn|[redacted]'))).toBe(true);
  expect(queries.filter((q) => SECRETS.some((x) => q.includes(x)))).toEqual([]);
  // what is stored instead: the reserved extension with a versioned ciphertext, and a blind hash
  const stored = rows.find((r) => r.table === 'resources' && r.text.includes(`,Patient,${ids.patient},`))!.text;
  expect(stored).toContain(ENCRYPTED_EXTENSION);
  expect(stored).toMatch(/e1\.1\.[A-Za-z0-9_-]{20,}/);
  expect(rows.some((r) => r.table === 'idx_token' && r.text.includes(SSN) && r.text.includes('b1.'))).toBe(true);
  expect(rows.some((r) => r.table === 'idx_token' && r.text.includes('MRN-ENC-1'))).toBe(true); // other identifiers stay plain
});

test('every read path returns the plaintext', async () => {
  const read = await s.http.get(`${s.base}/Patient/${ids.patient}`);
  expect(read.status).toBe(200);
  expect(read.body.identifier[0]).toEqual(patient.identifier[0]);
  expect(JSON.stringify(read.body)).not.toContain(ENCRYPTED_EXTENSION);
  const v1 = await s.http.get(`${s.base}/Patient/${ids.patient}/_history/1`);
  expect(v1.body.identifier[0].value).toBe(SSN_VALUE);
  const hist = await s.http.get(`${s.base}/Patient/${ids.patient}/_history`);
  expect(hist.body.entry.map((e: any) => e.resource.identifier[0].value)).toEqual([SSN_VALUE, SSN_VALUE]);
  const comp = await s.http.get(`${s.base}/Composition/${ids.composition}`);
  expect(comp.body.text.div).toContain(NOTE);
  expect(comp.body.section[0].text.div).toContain(NOTE);
  expect(comp.body.section[1].section[0].text.div).toContain('Recheck in 2 weeks');
  expect(comp.body.text.extension).toBeUndefined();
  // search page and _include
  const sr = await s.http.get(`${s.base}/Composition?subject=Patient/${ids.patient}&_include=Composition:subject`);
  const byType = Object.fromEntries(sr.body.entry.map((e: any) => [e.resource.resourceType, e.resource]));
  expect(byType.Composition.section[0].text.div).toContain(NOTE);
  expect(byType.Patient.identifier[0].value).toBe(SSN_VALUE);
  const inv = await s.http.get(`${s.base}/Invoice/${ids.invoice}`);
  expect(inv.body.identifier[0].value).toBe(PAYMENT);
  const sysHist = await s.http.get(`${s.base}/_history?_count=50`);
  const mine = sysHist.body.entry.filter((e: any) => e.resource?.id === ids.bundled);
  expect(mine[0].resource.identifier[0].value).toBe('111-22-3333');
});

test('an encrypted value that carries extensions of its own comes back with them', async () => {
  const own = { url: 'urn:example:verified', valueBoolean: true };
  const c = await s.http
    .post(`${s.base}/Patient`)
    .set('Content-Type', FHIR_JSON)
    .send({ resourceType: 'Patient', identifier: [{ system: SSN, value: '222-33-4444', _value: { extension: [own] } }] });
  expect(c.status).toBe(201);
  const r = await s.http.get(`${s.base}/Patient/${c.body.id}`);
  expect(r.body.identifier).toEqual([{ system: SSN, value: '222-33-4444', _value: { extension: [own] } }]);
  const stored = await inTenant(s.db.owner, s.tenant, async (tx) => (await tx.raw(`SELECT content::text AS t FROM resources WHERE tenant_id = ? AND id = ?`, [s.tenant, c.body.id])).rows[0].t);
  expect(stored).not.toContain('222-33-4444');
  expect(stored).toContain('urn:example:verified');
});

test('an encrypted identifier is found by exact token search (blind index), with or without the system', async () => {
  expect(await searchIds(`Patient?identifier=${SSN}|${SSN_DIGITS}`)).toEqual([ids.patient]);
  expect(await searchIds(`Patient?identifier=${SSN}|${SSN_VALUE}`)).toEqual([ids.patient]); // dashes do not matter
  expect(await searchIds(`Patient?identifier=${SSN_DIGITS}`)).toEqual([ids.patient]);
  expect(await searchIds(`Patient?identifier=${SSN}|000000000`)).toEqual([]);
  expect(await searchIds(`Patient?identifier=${SSN}|`)).toEqual(expect.arrayContaining([ids.bundled, ids.patient]));
  expect(await searchIds(`Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|${SSN_DIGITS}`)).toEqual([ids.patient]);
  expect(await searchIds(`Patient?identifier=urn:mrn|MRN-ENC-1`)).toEqual([ids.patient]);
  expect(await searchIds(`Invoice?identifier=https://stripe.com/payment_intent|${PAYMENT}`)).toEqual([ids.invoice]);
  expect(await searchIds(`Invoice?identifier=${PAYMENT}`)).toEqual([ids.invoice]);
  // conditional create finds the existing patient by SSN
  const again = await s.http
    .post(`${s.base}/Patient`)
    .set('Content-Type', FHIR_JSON)
    .set('If-None-Exist', `identifier=${SSN}|${SSN_DIGITS}`)
    .send(patient);
  expect(again.status).toBe(200);
  expect(again.body.id).toBe(ids.patient);
});

test('patch, delete and $restore keep the secret encrypted and searchable', async () => {
  const p = await s.http
    .patch(`${s.base}/Patient/${ids.bundled}`)
    .set('Content-Type', 'application/json-patch+json')
    .send([{ op: 'replace', path: '/name/0/family', value: 'Patched' }]);
  expect(p.status).toBe(200);
  expect(p.body.identifier[0].value).toBe('111-22-3333');
  expect([200, 204]).toContain((await s.http.delete(`${s.base}/Patient/${ids.bundled}`)).status);
  expect(await searchIds(`Patient?identifier=${SSN}|111223333`)).toEqual([]);
  const r = await s.http.post(`${s.base}/Patient/${ids.bundled}/$restore`);
  expect(r.status).toBe(200);
  expect(r.body.identifier[0].value).toBe('111-22-3333');
  expect(await searchIds(`Patient?identifier=${SSN}|111223333`)).toEqual([ids.bundled]);
  const rows = await tenantRowsAsText();
  expect(rows.filter((x) => x.text.includes('111223333') || x.text.includes('111-22-3333')).map((x) => x.table)).toEqual([]);
});

test('a client cannot send the reserved ciphertext extension', async () => {
  const r = await s.http
    .post(`${s.base}/Patient`)
    .set('Content-Type', FHIR_JSON)
    .send({ resourceType: 'Patient', identifier: [{ system: 'urn:x', _value: { extension: [{ url: ENCRYPTED_EXTENSION, valueString: 'e1.1.AAAA' }] } }] });
  expect(r.status).toBe(422);
  expect(r.body.resourceType).toBe('OperationOutcome');
  expect(r.body.issue[0].diagnostics).toContain('reserved');
});

test('reindex rebuilds the blind index from the decrypted resources', async () => {
  await reindex(s.db, { tenant: s.tenant, publicUrl: s.config.publicUrl });
  expect(await searchIds(`Patient?identifier=${SSN}|${SSN_DIGITS}`)).toEqual([ids.patient]);
  const idx = await inTenant(s.db.owner, s.tenant, async (tx) => (await tx.raw(`SELECT count(*)::int AS n FROM idx_token WHERE tenant_id = ? AND code LIKE ?`, [s.tenant, '%' + SSN_DIGITS + '%'])).rows[0].n);
  expect(idx).toBe(0);
});

test('keys:rotate (the CLI) makes a new data key active; old and new ciphertexts both read, search still works', async () => {
  const root = path.resolve(__dirname, '..');
  const { stdout } = await promisify(execFile)('npx', ['tsx', 'server/cli/keys-rotate.ts', s.tenant], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: TEST_DATABASE_URL, MASTER_KEY: TEST_MASTER_KEY, MASTER_KEY_PREVIOUS: '' },
  });
  expect(stdout).toMatch(new RegExp(`${s.tenant}: data key v2 active; 2 key\\(s\\) re-wrapped`));
  // the rotation is an admin action in the tenant's audit trail
  const trail = await s.http.get(`${s.base}/AuditEvent?subtype=admin-action`);
  expect(trail.body.entry.map((e: any) => e.resource.outcomeDesc)).toEqual([expect.stringMatching(/^npm run keys:rotate: data key v2 active; 2 key\(s\) re-wrapped/)]);
  // this server process learns of v2 when its cache expires or when it meets a v2 ciphertext:
  // force the first by asking for fresh keys, as a minute would
  const keys = await inTenant(s.db.app, s.tenant, (tx) => keysOf(tx, { fresh: true }));
  expect(keys.activeVersion).toBe(2);
  const c = await s.http.post(`${s.base}/Composition`).set('Content-Type', FHIR_JSON).send(composition(ids.patient));
  expect(c.status).toBe(201);
  const stored = await inTenant(s.db.owner, s.tenant, async (tx) => (await tx.raw(`SELECT content::text AS t FROM resources WHERE tenant_id = ? AND id = ?`, [s.tenant, c.body.id])).rows[0].t);
  expect(stored).toMatch(/e1\.2\./);
  expect(stored).not.toContain('chest tightness');
  for (const id of [ids.composition, c.body.id]) {
    expect((await s.http.get(`${s.base}/Composition/${id}`)).body.section[0].text.div).toContain(NOTE);
  }
  expect(await searchIds(`Patient?identifier=${SSN}|${SSN_DIGITS}`)).toEqual([ids.patient]);
});

test('master key rotation: re-wrapped under a new master key, the old one can be dropped', async () => {
  const newMaster = Buffer.alloc(32, 9).toString('base64');
  try {
    configureEncryption(loadConfig({ ...process.env, MASTER_KEY: newMaster, MASTER_KEY_PREVIOUS: TEST_MASTER_KEY }));
    const r = await rotateTenantKeys(s.db.app, s.tenant);
    expect(r.activeVersion).toBe(3);
    // only the new master key from now on
    configureEncryption(loadConfig({ ...process.env, MASTER_KEY: newMaster }));
    expect((await s.http.get(`${s.base}/Patient/${ids.patient}`)).body.identifier[0].value).toBe(SSN_VALUE);
    expect((await s.http.get(`${s.base}/Composition/${ids.composition}`)).body.section[0].text.div).toContain(NOTE);
    expect(await searchIds(`Patient?identifier=${SSN}|${SSN_DIGITS}`)).toEqual([ids.patient]);
    // and the old master key alone no longer opens the tenant's keys
    configureEncryption(loadConfig({ ...process.env, MASTER_KEY: TEST_MASTER_KEY }));
    await expect(inTenant(s.db.app, s.tenant, (tx) => keysOf(tx, { fresh: true }))).rejects.toThrow(/not configured/);
  } finally {
    configureEncryption(loadConfig({ ...process.env, MASTER_KEY: TEST_MASTER_KEY }));
  }
});
