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
