/**
 * The Synthea fixtures (/work/shared/fixtures/synthea) imported with server/cli/import.ts over real
 * HTTP: counts by type match what the bundles create, every Location in the responses is readable,
 * and every literal reference in the stored data points at a stored resource (so urn:uuid and
 * conditional references were all rewritten).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { importPaths, ImportSummary } from '../server/cli/import';
import { startTestServer, TestServer } from './helpers/test-server';

const ROOT = process.env.SYNTHEA_DIR ?? '/work/shared/fixtures/synthea';
const BLAZE = path.join(ROOT, 'blaze-2021');
const SMART = path.join(ROOT, 'smart-on-fhir-2019');
const REPO = path.resolve(__dirname, '..');

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer();
});
afterAll(async () => s.close());

interface FixtureEntry {
  fullUrl?: string;
  resource: { resourceType: string; identifier?: Array<{ system?: string; value?: string }> };
  request: { method: string; url: string; ifNoneExist?: string };
}
interface FixtureBundle {
  type: 'transaction' | 'batch';
  entry: FixtureEntry[];
}

const readBundle = (file: string) => JSON.parse(zlib.gunzipSync(fs.readFileSync(file)).toString('utf8')) as FixtureBundle;

/** The folder's bundles in import order: `00-*` support bundles first, then by name. */
function bundleFiles(dir: string): string[] {
  const names = fs.readdirSync(dir).filter((f) => f.endsWith('.json.gz')).sort();
  return [...names.filter((f) => f.startsWith('00-')), ...names.filter((f) => !f.startsWith('00-'))].map((f) => path.join(dir, f));
}

/**
 * What importing `files` in this order creates, per type, derived from the request of each entry:
 * a plain POST always creates (Synthea's smart-on-fhir bundles repeat their Practitioners and
 * Organizations, and each repeat is a new resource); a POST with ifNoneExist creates only when no
 * resource created before it carries the identifier it asks for. In a batch the entries run in
 * order; in a transaction every ifNoneExist is evaluated before the bundle's own creates.
 */
function expectedCreates(files: string[], created = new Map<string, number>(), byIdentifier = new Map<string, number>()) {
  const key = (type: string, system?: string, value?: string) => `${type}|${system ?? ''}|${value ?? ''}`;
  for (const file of files) {
    const b = readBundle(file);
    const pending: FixtureEntry['resource'][] = [];
    const register = (r: FixtureEntry['resource']) => {
      created.set(r.resourceType, (created.get(r.resourceType) ?? 0) + 1);
      for (const i of r.identifier ?? []) byIdentifier.set(key(r.resourceType, i.system, i.value), (byIdentifier.get(key(r.resourceType, i.system, i.value)) ?? 0) + 1);
    };
    for (const e of b.entry) {
      const { method, url, ifNoneExist } = e.request;
      if (method !== 'POST' || url !== e.resource.resourceType) {
        throw new Error(`${path.basename(file)}: ${method} ${url} — the expected-count model only knows type-level POSTs; extend it`);
      }
      if (ifNoneExist) {
        const params = [...new URLSearchParams(ifNoneExist.replace(/^[A-Za-z]+\?/, ''))];
        if (params.length !== 1 || params[0][0] !== 'identifier' || !params[0][1].includes('|')) {
          throw new Error(`${path.basename(file)}: ifNoneExist "${ifNoneExist}" — only identifier=system|value is modelled`);
        }
        const [system, value] = params[0][1].split('|', 2);
        const matches = byIdentifier.get(key(e.resource.resourceType, system, value)) ?? 0;
        if (matches > 1) throw new Error(`${path.basename(file)}: ifNoneExist ${ifNoneExist} would match ${matches} resources (412)`);
        if (matches === 1) continue; // already there: nothing created
      }
      if (b.type === 'batch') register(e.resource);
      else pending.push(e.resource);
    }
    pending.forEach(register);
  }
  return { created, byIdentifier };
}

const sorted = (m: Map<string, number>) => Object.fromEntries([...m].sort(([a], [b]) => (a < b ? -1 : 1)));

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

function literalReferences(value: unknown, out: string[]): string[] {
  if (Array.isArray(value)) value.forEach((v) => literalReferences(v, out));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') out.push(v);
      else literalReferences(v, out);
    }
  }
  return out;
}

describe('Synthea import', () => {
  const locations: string[] = [];
  const summaries: ImportSummary[] = [];
  let seconds = 0;

  test(
    'both folders import (blaze-2021, then smart-on-fhir-2019) and the counts by type match the fixtures',
    async () => {
      // Blaze first, and to completion: two Organizations of the Blaze patient bundles' conditional
      // references (Organization?identifier=https://github.com/synthetichealth/synthea|...) also
      // appear, as plain POSTs, in smart-on-fhir bundles. Once those exist the references match
      // two resources and the Blaze transactions rightly fail with 412.
      const blazeFiles = bundleFiles(BLAZE);
      const smartFiles = bundleFiles(SMART);
      const { created } = expectedCreates([...blazeFiles, ...smartFiles]);
      const onResponse = (_file: string, rb: { entry?: Array<{ response?: { location?: string } }> }) => {
        for (const e of rb.entry ?? []) if (e.response?.location) locations.push(e.response.location);
      };
      const t0 = Date.now();
      for (const dir of [BLAZE, SMART]) {
        summaries.push(await importPaths([dir], { baseUrl: s.baseUrl, token: await s.token(), concurrency: 2, quiet: true, onResponse }));
      }
      seconds = (Date.now() - t0) / 1000;
      const [blaze, smart] = summaries;
      expect(blaze.bundles).toBe(blazeFiles.length);
      expect(smart.bundles).toBe(smartFiles.length);
      const total = blaze.total + smart.total;
      process.stdout.write(
        `Synthea import: ${total} resources in ${seconds.toFixed(1)} s (${Math.round(total / seconds)}/s); ` +
          `blaze-2021 ${blaze.total} in ${blaze.seconds.toFixed(1)} s (${blaze.perSecond}/s), ` +
          `smart-on-fhir-2019 ${smart.total} in ${smart.seconds.toFixed(1)} s (${smart.perSecond}/s)\n`,
      );

      // What the importer saw created (201) equals the model.
      const reported = new Map<string, number>();
      for (const sum of summaries) for (const [t, n] of Object.entries(sum.created)) reported.set(t, (reported.get(t) ?? 0) + n);
      expect(sorted(reported)).toEqual(sorted(created));

      // What the server holds equals the model.
      const counted = new Map<string, number>();
      for (const type of created.keys()) {
        const r = await s.http.get(`${s.base}/${type}?_summary=count`);
        expect(r.status).toBe(200);
        counted.set(type, r.body.total);
      }
      expect(sorted(counted)).toEqual(sorted(created));
      expect(locations.length).toBe(total);
    },
    300_000,
  );

  test(
    'every Location of the transaction/batch responses is readable, and every stored reference resolves',
    async () => {
      expect(locations.length).toBeGreaterThan(0);
      const stored = new Set<string>();
      const references: Array<[string, string]> = [];
      const failures: string[] = [];
      const authorization = `Bearer ${await s.token()}`;
      await pool(locations, 8, async (loc) => {
        const res = await fetch(`${s.baseUrl}/${loc}`, { headers: { Accept: 'application/fhir+json', Authorization: authorization } });
        if (res.status !== 200) {
          failures.push(`${loc}: ${res.status}`);
          return;
        }
        const r = (await res.json()) as { resourceType: string; id: string };
        const [type, id] = loc.split('/');
        if (r.resourceType !== type || r.id !== id) failures.push(`${loc}: read ${r.resourceType}/${r.id}`);
        stored.add(`${type}/${id}`);
        for (const ref of literalReferences(r, [])) references.push([loc, ref]);
      });
      expect(failures).toEqual([]);
      const dangling = references.filter(([, ref]) => !ref.startsWith('#') && !stored.has(ref));
      expect(dangling.slice(0, 10)).toEqual([]);
      // Nothing left of the placeholders and conditional references.
      expect(references.filter(([, ref]) => ref.startsWith('urn:') || ref.includes('?'))).toEqual([]);
    },
    300_000,
  );
});

describe('import CLI', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fhir-import-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn('npx', ['tsx', 'server/cli/import.ts', ...args], { cwd: REPO, env: { ...process.env, FORCE_COLOR: '0', SIGNING_KEY: s.config.signingKey } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  test(
    'a failing bundle makes it exit non-zero naming the file, the HTTP status and the diagnostics',
    async () => {
      const bad = path.join(tmp, 'broken-transaction.json');
      fs.writeFileSync(
        bad,
        JSON.stringify({
          resourceType: 'Bundle',
          type: 'transaction',
          entry: [
            {
              fullUrl: 'urn:uuid:2f9c6f8e-1111-4c1e-9a53-0c1d2e3f4a5b',
              resource: { resourceType: 'Patient', birthDate: 'the day before yesterday' },
              request: { method: 'POST', url: 'Patient' },
            },
          ],
        }),
      );
      const badBatch = path.join(tmp, 'broken-batch.json');
      fs.writeFileSync(
        badBatch,
        JSON.stringify({
          resourceType: 'Bundle',
          type: 'batch',
          entry: [
            { resource: { resourceType: 'Patient', active: true }, request: { method: 'POST', url: 'Patient' } },
            { resource: { resourceType: 'Patient', gender: 'sometimes' }, request: { method: 'POST', url: 'Patient' } },
          ],
        }),
      );
      const [tx, batch] = await Promise.all([runCli(['--url', s.baseUrl, '--quiet', bad]), runCli(['--url', s.baseUrl, '--quiet', badBatch])]);

      expect(tx.code).not.toBe(0);
      expect(tx.stderr).toContain('broken-transaction.json');
      expect(tx.stderr).toMatch(/HTTP 4\d\d/);
      expect(tx.stderr).toMatch(/birthDate/);

      expect(batch.code).not.toBe(0);
      expect(batch.stderr).toContain('broken-batch.json');
      expect(batch.stderr).toMatch(/entry 1 \(POST Patient\) failed with status 4\d\d/);
      expect(batch.stderr).toMatch(/gender/);
    },
    30_000,
  );
});
