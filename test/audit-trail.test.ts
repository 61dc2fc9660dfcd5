/**
 * The audit trail: after a scripted session of reads, searches and writes, every access to
 * patient data has exactly its AuditEvent (who, client, patient, action, entity, outcome, IP),
 * refusals are security events, the hash chain verifies, and editing a row in SQL breaks it at
 * that event. The application role can neither change nor delete the trail.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { inTenant } from '../server/db/tenant-tx';
import { verifyChain } from '../server/audit/verify';
import { AuditTrail } from '../server/audit/trail';
import type { AuditEvent } from 'fhir/r4';
import { TEST_DATABASE_URL } from './helpers/db-url';

let s: TestServer;
afterAll(() => s.close());
beforeAll(async () => {
  s = await startTestServer();
});

interface Ev {
  subtype: Array<{ code: string }>;
  action: string;
  outcome: string;
  type: { code: string };
  agent: Array<{ who: { reference?: string; identifier?: { value: string } }; network?: { address: string } }>;
  entity?: Array<{ what?: { reference: string }; query?: string }>;
  source: { site: string };
}

async function events(tenant = s.tenant): Promise<Ev[]> {
  await s.audit.flush();
  const r = await inTenant(s.db.owner, tenant, (tx) =>
    tx.raw(`SELECT x.content::text AS c FROM audit_chain c JOIN resources x ON x.tenant_id = c.tenant_id AND x.id = c.res_id AND x.res_type = 'AuditEvent' WHERE c.tenant_id = ? ORDER BY c.seq`, [tenant]),
  );
  return (r.rows as Array<{ c: string }>).map((x) => JSON.parse(x.c));
}

const summary = (e: Ev) => `${e.subtype[0].code} ${e.action} ${e.outcome} ${(e.entity ?? []).map((x) => x.what?.reference ?? 'query').join(',')}`;

test('a scripted session leaves exactly one AuditEvent per access to patient data', async () => {
  const tenant = await s.newTenant();
  const base = `/fhir/${tenant}`;
  const doc = await s.as({ tenant, scope: 'user/*.cruds', fhirUser: 'Practitioner/doc1', role: 'physician', sub: 'doc1', clientId: 'ehr-app' });
  const before = (await events(tenant)).length;
  expect(before).toBe(0);

  const p = await doc.post(`${base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', name: [{ family: 'Audited' }] });
  expect(p.status).toBe(201);
  const pid = p.body.id;
  const o = await doc.post(`${base}/Observation`).set('Content-Type', FHIR_JSON).set('Prefer', 'return=minimal')
    .send({ resourceType: 'Observation', status: 'final', code: { text: 'bp' }, subject: { reference: `Patient/${pid}` } });
  expect(o.status).toBe(201);
  const oid = /Observation\/([^/]+)/.exec(o.headers.location)![1];
  expect((await doc.get(`${base}/Patient/${pid}`)).status).toBe(200);
  expect((await doc.get(`${base}/Observation?subject=Patient/${pid}`)).status).toBe(200);
  expect((await doc.put(`${base}/Patient/${pid}`).set('Content-Type', FHIR_JSON).send({ ...p.body, active: true })).status).toBe(200);
  expect((await doc.delete(`${base}/Observation/${oid}`)).status).toBe(200);
  expect((await doc.get(`${base}/Observation/${oid}`)).status).toBe(410);
  // no patient data: not audited
  expect((await doc.get(`${base}/Practitioner?name=x`)).status).toBe(200);
  expect((await doc.get(`${base}/metadata`)).status).toBe(200);
  // refused: a security event
  const nurse = await s.as({ tenant, scope: 'user/*.cruds', fhirUser: 'Practitioner/n1', role: 'nurse', sub: 'n1' });
  expect((await nurse.delete(`${base}/Patient/${pid}`)).status).toBe(403);

  const ev = await events(tenant);
  expect(ev.map(summary)).toEqual([
    `create C 0 Patient/${pid}`,
    `create C 0 Patient/${pid},Observation/${oid}`,
    `read R 0 Patient/${pid}`,
    `search-type R 0 Patient/${pid},Observation/${oid},query`,
    `update U 0 Patient/${pid}`,
    `delete D 0 Observation/${oid}`,
    `read R 4 Observation/${oid}`,
    `delete D 4 Patient/${pid}`,
  ]);
  const last = ev[ev.length - 1];
  expect(last.type.code).toBe('110113'); // Security Alert
  expect(ev[0].type.code).toBe('110110'); // Patient Record
  expect(ev[0].agent[0].who.reference).toBe('Practitioner/doc1');
  expect(ev[0].agent[1].who.identifier!.value).toBe('ehr-app');
  expect(ev[0].agent[0].network!.address).toMatch(/127\.0\.0\.1/);
  expect(ev[0].source.site).toBe(tenant);
  expect(Buffer.from(ev[3].entity!.find((e) => e.query)!.query!, 'base64').toString()).toContain(`subject=Patient/${pid}`);

  // searchable through the API by an admin, by patient
  const admin = await s.as({ tenant, scope: 'user/AuditEvent.rs', fhirUser: 'Practitioner/a1', role: 'admin', sub: 'a1' });
  const found = await admin.get(`${base}/AuditEvent?patient=${pid}&_count=100`);
  expect(found.status).toBe(200);
  expect(found.body.total).toBe(ev.length - 2); // the Observation-only delete and read name no patient

  const report = await verifyChain(s.db.app, tenant);
  expect(report.firstBreak).toBeUndefined();
  expect(report.unchained).toBe(0);
  expect(report.links).toBeGreaterThanOrEqual(ev.length);
});

test('the chain verifies, and an edit in SQL breaks it exactly at that event (npm run audit:verify)', async () => {
  const tenant = await s.newTenant();
  const base = `/fhir/${tenant}`;
  const pid = (await s.http.post(`${base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient' })).body.id;
  for (let i = 0; i < 5; i++) expect((await s.http.get(`${base}/Patient/${pid}`)).status).toBe(200);
  await s.audit.flush();
  const ok = await verifyChain(s.db.app, tenant);
  expect(ok).toMatchObject({ links: 6, queued: 0, unchained: 0 });
  expect(ok.firstBreak).toBeUndefined();
  expect(await cli(tenant)).toMatchObject({ code: 0 });

  // tamper as the database owner (the app role cannot, see below): change link 3's event
  const third = await inTenant(s.db.owner, tenant, (tx) => tx.raw(`SELECT res_id FROM audit_chain WHERE tenant_id = ? AND seq = 3`, [tenant]));
  const id = third.rows[0].res_id;
  await inTenant(s.db.owner, tenant, (tx) =>
    tx.raw(`UPDATE resources SET content = replace(content::text, '"outcome":"0"', '"outcome":"4"')::json WHERE tenant_id = ? AND res_type = 'AuditEvent' AND id = ?`, [tenant, id]),
  );
  const broken = await verifyChain(s.db.app, tenant);
  expect(broken.firstBreak).toEqual({ seq: 3, auditEvent: `AuditEvent/${id}`, reason: 'the AuditEvent was changed after it was sealed' });
  const out = await cli(tenant);
  expect(out.code).toBe(1);
  expect(out.stdout).toContain(`BROKEN at link 3 (AuditEvent/${id})`);
});

test('append-only: the application role can neither change nor delete the trail, nor can any API call', async () => {
  const pid = (await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient' })).body.id;
  await s.http.get(`${s.base}/Patient/${pid}`);
  await s.audit.flush();
  const app = s.db.app;
  await expect(inTenant(app, s.tenant, (tx) => tx.raw(`UPDATE resources SET deleted = true WHERE tenant_id = ? AND res_type = 'AuditEvent'`, [s.tenant]))).rejects.toThrow(/append-only/);
  await expect(inTenant(app, s.tenant, (tx) => tx.raw(`DELETE FROM resources WHERE tenant_id = ? AND res_type = 'AuditEvent'`, [s.tenant]))).rejects.toThrow(/append-only/);
  await expect(inTenant(app, s.tenant, (tx) => tx.raw(`DELETE FROM audit_chain WHERE tenant_id = ?`, [s.tenant]))).rejects.toThrow(/permission denied/);
  await expect(inTenant(app, s.tenant, (tx) => tx.raw(`UPDATE audit_chain SET hash = 'x' WHERE tenant_id = ?`, [s.tenant]))).rejects.toThrow(/permission denied/);
  const ae = (await s.http.get(`${s.base}/AuditEvent?_count=1`)).body.entry[0].resource;
  expect((await s.http.put(`${s.base}/AuditEvent/${ae.id}`).set('Content-Type', FHIR_JSON).send(ae)).status).toBe(405);
  expect((await s.http.delete(`${s.base}/AuditEvent/${ae.id}`)).status).toBe(405);
  expect((await s.http.post(`${s.base}/AuditEvent/${ae.id}/$restore`)).status).toBe(405);
  expect((await verifyChain(app, s.tenant)).firstBreak).toBeUndefined();
});

test('concurrent requests from many connections still form one unbroken chain', async () => {
  const tenant = await s.newTenant();
  const base = `/fhir/${tenant}`;
  const pid = (await s.http.post(`${base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient' })).body.id;
  await Promise.all(Array.from({ length: 60 }, () => s.http.get(`${base}/Patient/${pid}`)));
  const r = await verifyChain(s.db.app, tenant);
  await s.audit.flush();
  const after = await verifyChain(s.db.app, tenant);
  expect(r.firstBreak).toBeUndefined();
  expect(after).toMatchObject({ links: 61, queued: 0, unchained: 0 });
});

test('several writers (processes) on one tenant: busy ones queue, every event is sealed once, in one chain', async () => {
  const tenant = await s.newTenant();
  // Four trails stand for four server processes; a lock held by one makes the others queue.
  const trails = Array.from({ length: 4 }, () => new AuditTrail(s.db.app, { flushMs: 5 }));
  const event = (w: number, i: number): AuditEvent => ({
    resourceType: 'AuditEvent',
    type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' },
    recorded: new Date().toISOString(),
    outcomeDesc: `writer ${w} event ${i}`,
    agent: [{ requestor: true, who: { display: `writer ${w}` } }],
    source: { site: tenant, observer: { display: 'test' } },
  });
  const holder = await s.db.owner.client.acquireConnection();
  try {
    // hold the chain lock for a moment, so the first flushes find it taken and queue
    await holder.query('BEGIN');
    await holder.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`audit:${tenant}`]);
    for (const [w, t] of trails.entries()) for (let i = 0; i < 25; i++) t.record(tenant, event(w, i));
    await new Promise((r) => setTimeout(r, 100));
    const queued = await verifyChain(s.db.app, tenant);
    expect(queued.queued).toBeGreaterThan(0);
  } finally {
    await holder.query('ROLLBACK');
    await s.db.owner.client.releaseConnection(holder);
  }
  for (let round = 0; round < 3; round++) {
    for (const [w, t] of trails.entries()) for (let i = 0; i < 10; i++) t.record(tenant, event(w, 100 + round * 10 + i));
    await Promise.all(trails.map((t) => t.flush()));
  }
  await Promise.all(trails.map((t) => t.close()));
  const report = await verifyChain(s.db.app, tenant);
  expect(report).toMatchObject({ links: 4 * 25 + 4 * 30, queued: 0, unchained: 0 });
  expect(report.firstBreak).toBeUndefined();
  const texts = (await events(tenant)).map((e) => (e as unknown as { outcomeDesc: string }).outcomeDesc);
  expect(new Set(texts).size).toBe(texts.length);
  // each writer's events stay in its own order within the chain
  for (let w = 0; w < 4; w++) {
    const mine = texts.filter((t) => t.startsWith(`writer ${w} `)).map((t) => Number(t.split(' ').pop()));
    expect(mine).toEqual([...mine].sort((a, b) => a - b));
  }
});

test('events queued while another process held the lock are sealed soon after, without new events or the sweep', async () => {
  const tenant = await s.newTenant();
  const trail = new AuditTrail(s.db.app, { flushMs: 20, sweepMs: 3_600_000 });
  const holder = await s.db.owner.client.acquireConnection();
  try {
    await holder.query('BEGIN');
    await holder.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`audit:${tenant}`]);
    for (let i = 0; i < 5; i++) {
      trail.record(tenant, {
        resourceType: 'AuditEvent',
        type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' },
        recorded: new Date().toISOString(),
        agent: [{ requestor: true, who: { display: 'queued' } }],
        source: { site: tenant, observer: { display: 'test' } },
      });
    }
    await trail.flush(); // lock taken: queued
    await new Promise((r) => setTimeout(r, 150)); // every flush the events scheduled has run meanwhile
    expect((await verifyChain(s.db.app, tenant)).queued).toBe(5);
  } finally {
    await holder.query('ROLLBACK');
    await s.db.owner.client.releaseConnection(holder);
  }
  // no flush(), no close(), no new event: the trail's own retry seals them
  let report = await verifyChain(s.db.app, tenant);
  for (let i = 0; i < 100 && report.queued; i++) {
    await new Promise((r) => setTimeout(r, 20));
    report = await verifyChain(s.db.app, tenant);
  }
  expect(report).toMatchObject({ links: 5, queued: 0, unchained: 0 });
  await trail.close();
});

function cli(tenant: string): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const c = spawn('npx', ['tsx', 'server/cli/audit-verify.ts', '--tenant', tenant], {
      cwd: path.resolve(__dirname, '..'),
      env: { ...process.env, DATABASE_URL: TEST_DATABASE_URL },
    });
    let stdout = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stdout += d));
    c.on('exit', (code) => resolve({ code, stdout }));
  });
}
