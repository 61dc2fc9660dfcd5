/**
 * Interoperability with a third-party client: fhir-kit-client (ESM only, so it runs in a child
 * `node` process, test/clients/fhir-kit-client.mjs, which prints what it got back as JSON).
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startTestServer, TestServer } from './helpers/test-server';

let s: TestServer;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
let out: any;
const family = `Kit${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  s = await startTestServer();
  const script = path.join(__dirname, 'clients', 'fhir-kit-client.mjs');
  const env = { ...process.env, FHIR_TOKEN: await s.token({ scope: 'system/*.cruds', clientId: 'fhir-kit-client' }) };
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [script, s.baseUrl, family], { cwd: path.resolve(__dirname, '..'), timeout: 30_000, env }, (err, so, se) => {
      // The script exits 1 with a JSON error report; keep it for the assertions' messages.
      if (err && !so) reject(new Error(`fhir-kit-client script failed: ${err.message}\n${se}`));
      else resolve(so);
    });
  });
  out = JSON.parse(stdout);
}, 60_000);
afterAll(async () => s.close());

test('the client script ran without an error', () => {
  expect(out.error).toBeUndefined();
});

test('capabilityStatement', () => {
  expect(out.capability).toEqual({ resourceType: 'CapabilityStatement', fhirVersion: '4.0.1' });
});

test('create returns the stored resource with a server id and version 1', () => {
  expect(out.created.resourceType).toBe('Patient');
  expect(out.created.id).toMatch(/^[A-Za-z0-9\-.]{1,64}$/);
  expect(out.created.meta.versionId).toBe('1');
  expect(out.created.name[0]).toEqual({ family, given: ['Kit'] });
});

test('read returns what was created', () => {
  expect(out.read).toEqual(out.created);
});

test('update makes version 2; vread still gives version 1', () => {
  expect(out.updated.id).toBe(out.created.id);
  expect(out.updated.meta.versionId).toBe('2');
  expect(out.updated.active).toBe(true);
  expect(out.updated.name[0].given).toEqual(['Kit', 'Updated']);
  expect(out.vread1.meta.versionId).toBe('1');
  expect(out.vread1.active).toBeUndefined();
});

test('search (GET with paging via nextPage, and POST _search)', () => {
  expect(out.search.resourceType).toBe('Bundle');
  expect(out.search.type).toBe('searchset');
  expect(out.search.entry).toHaveLength(1);
  expect(out.search.link.some((l: { relation: string }) => l.relation === 'next')).toBe(true);
  expect(out.nextPage).not.toBeNull();
  expect(out.nextPage.entry).toHaveLength(1);
  const ids = [...out.search.entry, ...out.nextPage.entry].map((e: { resource: { id: string } }) => e.resource.id).sort();
  expect(ids).toEqual([out.created.id, out.secondId].sort());
  const postIds = out.postSearch.entry.map((e: { resource: { id: string } }) => e.resource.id).sort();
  expect(postIds).toEqual(ids);
});

test('history lists both versions, newest first', () => {
  expect(out.history.type).toBe('history');
  expect(out.history.entry.map((e: { resource: { meta: { versionId: string } } }) => e.resource.meta.versionId)).toEqual(['2', '1']);
  for (const e of out.history.entry) {
    expect(e.request.method).toBeDefined();
    expect(e.response.status).toBeDefined();
  }
});

test('transaction with a urn:uuid reference', () => {
  expect(out.transaction.type).toBe('transaction-response');
  expect(out.transaction.entry.map((e: { response: { status: string } }) => e.response.status.slice(0, 3))).toEqual(['201', '201']);
});

test('errors reach the client as HTTP status + OperationOutcome (410 deleted, 404 unknown)', () => {
  expect(out.readDeleted.status).toBe(410);
  expect(out.readDeleted.data.resourceType).toBe('OperationOutcome');
  expect(out.readMissing.status).toBe(404);
  expect(out.readMissing.data.resourceType).toBe('OperationOutcome');
});
