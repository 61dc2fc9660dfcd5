/** Reindexing: damaged index rows are rebuilt from the stored resources, one tenant at a time. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { TEST_DATABASE_URL } from './helpers/db-url';
import { create, matchIds } from './rest-util';
import { listTenants, reindex, ReindexProgress } from '../server/search/reindex';
import { INDEX_TABLES } from '../server/search/indexer';

const ROOT = path.resolve(__dirname, '..');
let s: TestServer;
let other: string;
const ids: Record<string, string> = {};
const LOINC = 'http://loinc.org';

beforeAll(async () => {
  s = await startTestServer();
  other = await s.newTenant();
  for (const family of ['Reindexa', 'Reindexb', 'Reindexc', 'Reindexd', 'Reindexe']) {
    ids[family] = (await create(s, { resourceType: 'Patient', name: [{ family }], identifier: [{ system: 'urn:re', value: family }] })).id;
  }
  ids.bp = (
    await create(s, {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: LOINC, code: '85354-9' }] },
      subject: { reference: `Patient/${ids.Reindexa}` },
      component: [
        { code: { coding: [{ system: LOINC, code: '8480-6' }] }, valueQuantity: { value: 150, system: 'http://unitsofmeasure.org', code: 'mm[Hg]' } },
        { code: { coding: [{ system: LOINC, code: '8462-4' }] }, valueQuantity: { value: 70, system: 'http://unitsofmeasure.org', code: 'mm[Hg]' } },
      ],
    })
  ).id;
  ids.gone = (await create(s, { resourceType: 'Patient', name: [{ family: 'Reindexgone' }] })).id;
  expect([200, 204]).toContain((await s.http.delete(`${s.base}/Patient/${ids.gone}`)).status);
  ids.otherPatient = (await create(s, { resourceType: 'Patient', name: [{ family: 'Elsewhere' }] }, `/fhir/${other}`)).id;
});
afterAll(async () => s.close());

const search = async (q: string, base = s.base) => {
  const r = await s.http.get(`${base}/${q}`);
  expect(r.status).toBe(200);
  return matchIds(r.body).sort();
};

/** Index rows per table of one tenant, as a comparable snapshot. */
async function snapshot(tenant: string): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const t of INDEX_TABLES) {
    // (the audit trail grows with every request of the test itself; it is left out)
    const r = await s.db.owner.raw(`SELECT * FROM ${t} WHERE tenant_id = ? AND res_type <> 'AuditEvent'`, [tenant]);
    out[t] = r.rows.map((row: Record<string, unknown>) => JSON.stringify(row)).sort();
  }
  return out;
}

async function auditEvents(tenant: string): Promise<number> {
  await s.audit.flush();
  const r = await s.db.owner.raw(`SELECT count(*)::int AS n FROM resources WHERE tenant_id = ? AND res_type = 'AuditEvent'`, [tenant]);
  return r.rows[0].n;
}

test('rebuilds deleted, altered and stray index rows of the given tenant only', async () => {
  const before = await snapshot(s.tenant);
  const otherBefore = await snapshot(other);
  const owner = s.db.owner;
  // damage: drop the name rows of two patients, all composite rows, alter a token row, add stray rows
  await owner.raw(`DELETE FROM idx_string WHERE tenant_id = ? AND res_id IN (?, ?)`, [s.tenant, ids.Reindexa, ids.Reindexb]);
  await owner.raw(`DELETE FROM idx_composite WHERE tenant_id = ?`, [s.tenant]);
  await owner.raw(`UPDATE idx_token SET code = 'wrong' WHERE tenant_id = ? AND res_id = ? AND param = 'identifier'`, [s.tenant, ids.Reindexc]);
  await owner.raw(`INSERT INTO idx_token (tenant_id, res_type, res_id, param, system, code) VALUES (?, 'Patient', ?, 'identifier', 'urn:re', 'stray')`, [s.tenant, ids.Reindexd]);
  await owner.raw(`INSERT INTO idx_token (tenant_id, res_type, res_id, param, system, code) VALUES (?, 'Patient', ?, 'identifier', 'urn:re', 'ghost')`, [s.tenant, ids.gone]);
  await owner.raw(`DELETE FROM idx_string WHERE tenant_id = ?`, [other]);

  expect(await search('Patient?family=reindexa')).toEqual([]);
  expect(await search('Patient?identifier=urn:re|Reindexc')).toEqual([]);
  expect(await search('Patient?identifier=urn:re|stray')).toEqual([ids.Reindexd]);
  expect(await search(`Observation?component-code-value-quantity=${encodeURIComponent(`${LOINC}|8480-6$gt140`)}`)).toEqual([]);

  const progress: ReindexProgress[] = [];
  // a small batch size, so that the keyset paging crosses several batches
  const audits = await auditEvents(s.tenant); // the audit trail of this test's requests is reindexed too
  const summary = await reindex(s.db, { tenant: s.tenant, batchSize: 2, publicUrl: s.config.publicUrl, onProgress: (p) => progress.push(p) });
  expect(summary.resources).toBe(7 + audits); // 5 patients, 1 observation, 1 deleted patient
  expect(summary.tenants.map((t) => t.tenant)).toEqual([s.tenant]);
  expect(progress.length).toBeGreaterThanOrEqual(4);
  expect(progress[progress.length - 1]).toMatchObject({ tenant: s.tenant, done: 7 + audits, total: 7 + audits });
  expect(progress.every((p) => p.tenant === s.tenant)).toBe(true);

  expect(await search('Patient?family=reindexa')).toEqual([ids.Reindexa]);
  expect(await search('Patient?family=reindexb')).toEqual([ids.Reindexb]);
  expect(await search('Patient?identifier=urn:re|Reindexc')).toEqual([ids.Reindexc]);
  expect(await search('Patient?identifier=urn:re|stray')).toEqual([]);
  expect(await search(`Observation?component-code-value-quantity=${encodeURIComponent(`${LOINC}|8480-6$gt140`)}`)).toEqual([ids.bp]);
  expect(await snapshot(s.tenant)).toEqual(before);

  // the other tenant was not touched: its damage is still there
  expect(await search('Patient?family=elsewhere', `/fhir/${other}`)).toEqual([]);
  const otherNow = await snapshot(other);
  expect(otherNow.idx_string).toEqual([]);
  expect(otherNow.idx_token).toEqual(otherBefore.idx_token);

  // --type limits to one resource type
  const obsOnly = await reindex(s.db, { tenant: other, type: 'Observation' });
  expect(obsOnly.resources).toBe(0);
  expect(await search('Patient?family=elsewhere', `/fhir/${other}`)).toEqual([]);
  await reindex(s.db, { tenant: other, type: 'Patient' });
  expect(await search('Patient?family=elsewhere', `/fhir/${other}`)).toEqual([ids.otherPatient]);
  expect(await snapshot(other)).toEqual(otherBefore);
});

test('writes during a reindex are not lost or interleaved', async () => {
  const names = Array.from({ length: 12 }, (_, i) => `Racer${String.fromCharCode(97 + i)}`);
  const created: string[] = [];
  for (const n of names) created.push((await create(s, { resourceType: 'Patient', name: [{ family: n }] })).id);
  const writes = (async () => {
    for (let i = 0; i < created.length; i++) {
      const r = await s.http
        .put(`${s.base}/Patient/${created[i]}`)
        .set('Content-Type', FHIR_JSON)
        .send({ resourceType: 'Patient', id: created[i], name: [{ family: `Renamed${names[i]}` }] });
      expect(r.status).toBe(200);
    }
  })();
  await Promise.all([reindex(s.db, { tenant: s.tenant, type: 'Patient', batchSize: 1, publicUrl: s.config.publicUrl }), writes]);
  expect(await search('Patient?family=racer')).toEqual([]);
  expect(await search('Patient?family=renamedracer&_count=100')).toEqual([...created].sort());
  const rows = await s.db.owner.raw(
    `SELECT count(*)::int AS n FROM idx_string WHERE tenant_id = ? AND param = 'family' AND res_id = ANY(?)`,
    [s.tenant, created],
  );
  expect(rows.rows[0].n).toBe(created.length);
});

test('unknown tenants and types are refused; listTenants sees every tenant', async () => {
  await expect(reindex(s.db, { tenant: 'no-such-tenant-x1' })).rejects.toThrow(/Unknown tenant/);
  await expect(reindex(s.db, { tenant: s.tenant, type: 'Patientx' })).rejects.toThrow(/Unknown resource type/);
  const all = await listTenants(s.db);
  expect(all).toEqual(expect.arrayContaining([s.tenant, other]));
});

describe('npm run reindex', () => {
  const run = (args: string[], env: Record<string, string | undefined>) => {
    const e = { ...process.env, ...env } as NodeJS.ProcessEnv;
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete e[k];
    return spawnSync(process.execPath, [path.join(ROOT, 'node_modules/tsx/dist/cli.mjs'), 'server/cli/reindex.ts', ...args], {
      cwd: ROOT,
      env: e,
      encoding: 'utf8',
      timeout: 60_000,
    });
  };

  let audits = 0;
  beforeAll(async () => {
    audits = await auditEvents(other);
  });

  test('--help, and a run on one tenant with a progress line and a summary', () => {
    const help = run(['--help'], {});
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--tenant <slug>/);
    const r = run(['--tenant', other], { DATABASE_URL: TEST_DATABASE_URL });
    const n = 1 + audits;
    expect([r.status, r.stderr]).toEqual([0, expect.stringMatching(new RegExp(`reindex ${other}: ${n}/${n} \\(100%\\)`))]);
    expect(r.stdout).toMatch(new RegExp(`Reindexed ${n} resources in 1 tenant in`));
    const bad = run(['--tenant'], { DATABASE_URL: TEST_DATABASE_URL });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/--tenant needs a value/);
  });

  test('refuses an embedded database another process holds open', () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhir-reindex-'));
    try {
      fs.mkdirSync(path.join(dataDir, 'pglite'));
      fs.writeFileSync(path.join(dataDir, 'pglite', 'PG_VERSION'), '17\n');
      fs.writeFileSync(path.join(dataDir, 'pglite', 'postmaster.pid'), '-42\n');
      const r = run([], { DATABASE_URL: undefined, DATA_DIR: dataDir });
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/in use \(is npm start running\?\)/);
      const none = run([], { DATABASE_URL: undefined, DATA_DIR: path.join(dataDir, 'missing') });
      expect(none.status).toBe(1);
      expect(none.stderr).toMatch(/No embedded database/);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
