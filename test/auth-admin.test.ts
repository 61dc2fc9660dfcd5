/** Creating practices: the operator API (ADMIN_API_KEY) and `npm run tenant -- create`. */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { startTestServer, TestServer } from './helpers/test-server';
import { TEST_DATABASE_URL } from './helpers/db-url';
import { checkPassword, listUsers } from '../server/auth/users';

const KEY = 'operator-key-' + randomBytes(8).toString('hex');
let s: TestServer;

beforeAll(async () => {
  s = await startTestServer({ ADMIN_API_KEY: KEY });
});
afterAll(async () => {
  await s?.close();
});

test('POST /admin/tenants creates a practice with its first admin', async () => {
  const slug = `op-${randomBytes(4).toString('hex')}`;
  expect((await s.anon.post('/admin/tenants').send({ slug, adminEmail: 'a@example.org' })).status).toBe(401);
  expect((await s.anon.post('/admin/tenants').set('Authorization', 'Bearer wrong').send({ slug, adminEmail: 'a@example.org' })).status).toBe(401);
  const r = await s.anon.post('/admin/tenants').set('Authorization', `Bearer ${KEY}`).send({ slug, name: 'Op practice', adminEmail: 'boss@example.org' });
  expect(r.status).toBe(201);
  expect(r.body.admin).toMatchObject({ email: 'boss@example.org', role: 'admin', mfa: false });
  expect(r.body.password.length).toBeGreaterThanOrEqual(12);
  expect(await checkPassword(s.db.app, slug, 'boss@example.org', r.body.password)).toBeTruthy();
  expect((await s.anon.get(`/fhir/${slug}/.well-known/smart-configuration`)).body.issuer).toBe(`${s.url}/auth/${slug}`);
  // the new practice's admin API answers the new practice's admin tokens only
  const adminTok = await s.token({ tenant: slug, role: 'admin', sub: r.body.admin.id, scope: 'user/*.rs' });
  const users = await s.anon.get(`/auth/${slug}/admin/users`).set('Authorization', `Bearer ${adminTok}`);
  expect(users.status).toBe(200);
  expect(users.body.map((u: { email: string }) => u.email)).toEqual(['boss@example.org']);
  const otherAdmin = await s.token({ role: 'admin', sub: 'x', scope: 'user/*.rs' });
  expect((await s.anon.get(`/auth/${slug}/admin/users`).set('Authorization', `Bearer ${otherAdmin}`)).status).toBe(403);
});

test('npm run tenant -- create', async () => {
  const slug = `cli-${randomBytes(4).toString('hex')}`;
  const root = path.resolve(__dirname, '..');
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [path.join(root, 'node_modules/tsx/dist/cli.mjs'), 'server/cli/tenant.ts', 'create', slug, '--name', 'CLI practice', '--admin-email', 'owner@example.org'],
    { cwd: root, env: { ...process.env, DATABASE_URL: TEST_DATABASE_URL, LOG_LEVEL: 'warn' }, timeout: 60_000 },
  );
  expect(stdout).toContain(`Created tenant ${slug}`);
  const pw = /password: (\S+)/.exec(stdout)![1];
  expect(await checkPassword(s.db.app, slug, 'owner@example.org', pw)).toBeTruthy();
  expect((await listUsers(s.db.app, slug))[0].role).toBe('admin');
});

/** The tenant's admin-action AuditEvents (read as the tenant's admin through FHIR). */
async function adminActions(tenant: string): Promise<Array<{ outcome: string; outcomeDesc?: string; type: { code: string } }>> {
  await s.audit.flush();
  const tok = await s.token({ tenant, role: 'admin', sub: 'auditor', scope: 'user/AuditEvent.rs' });
  const r = await s.anon.get(`/fhir/${tenant}/AuditEvent?subtype=admin-action&_count=100`).set('Authorization', `Bearer ${tok}`);
  expect(r.status).toBe(200);
  return (r.body.entry ?? []).map((e: { resource: unknown }) => e.resource);
}

test('admin changes (operator API, admin API, CLI) leave admin-action AuditEvents; reads do not', async () => {
  const slug = `aud-${randomBytes(4).toString('hex')}`;
  expect((await s.anon.post('/admin/tenants').set('Authorization', `Bearer ${KEY}`).send({ slug, adminEmail: 'chief@example.org' })).status).toBe(201);
  const tok = await s.token({ tenant: slug, role: 'admin', sub: 'chief', scope: 'user/*.rs' });
  const api = (m: 'get' | 'post', p: string) => s.anon[m](`/auth/${slug}${p}`).set('Authorization', `Bearer ${tok}`);
  expect((await api('post', '/admin/users').send({ email: 'nurse@example.org', role: 'nurse', password: 'a long enough password 1' })).status).toBe(201);
  expect((await api('post', '/admin/users').send({ email: 'nurse@example.org', role: 'nurse', password: 'a long enough password 1' })).status).toBe(409);
  expect((await api('get', '/admin/users')).status).toBe(200);
  const root = path.resolve(__dirname, '..');
  await promisify(execFile)(
    process.execPath,
    [path.join(root, 'node_modules/tsx/dist/cli.mjs'), 'server/cli/tenant.ts', 'add-user', slug, '--email', 'dr@example.org', '--role', 'physician', '--password', 'another long password 2'],
    { cwd: root, env: { ...process.env, DATABASE_URL: TEST_DATABASE_URL, LOG_LEVEL: 'warn' }, timeout: 60_000 },
  );
  const events = await adminActions(slug);
  const said = events.map((e) => e.outcomeDesc ?? '');
  expect(events.every((e) => e.type.code === '110100')).toBe(true);
  expect(said.filter((d) => /operator API.*tenant created/.test(d))).toHaveLength(1);
  expect(said.filter((d) => /^POST \/admin\/users -> 201$/.test(d))).toHaveLength(1);
  expect(events.filter((e) => e.outcome === '4' && /POST \/admin\/users -> 409/.test(e.outcomeDesc ?? ''))).toHaveLength(1);
  expect(said.filter((d) => /npm run tenant: add-user: user .* \(physician\)/.test(d))).toHaveLength(1);
  expect(said.some((d) => d.startsWith('GET'))).toBe(false);
  expect(JSON.stringify(events)).not.toMatch(/@example\.org/); // ids, never emails
});
