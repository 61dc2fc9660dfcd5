/**
 * Federation to an external OpenID Connect identity provider, end to end over real HTTP: a second
 * oidc-provider plays the practice's IdP (test/helpers/test-idp.ts); a scripted browser goes
 * SMART authorize → our sign-in page → "Sign in with …" → the IdP → our callback → TOTP (when the
 * IdP did no MFA) → authorization code → token → FHIR API. Plus the refusals (unknown or
 * unverified email, tampered state, another browser, the IdP refusing or down), the admin API and
 * the CLI that configure it.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { decodeJwt } from 'jose';
import { startTestServer, TestServer, FHIR_JSON, TEST_MASTER_KEY } from './helpers/test-server';
import { startTestIdp, TestIdp } from './helpers/test-idp';
import { TEST_DATABASE_URL } from './helpers/db-url';
import { authorizeUrl, Browser, pkce, tokenRequest } from './helpers/smart-browser';
import { createUser } from '../server/auth/users';
import { newTotpSecret, totpCode } from '../server/auth/totp';
import { AuthEvent, onAuthEvent } from '../server/auth/events';
import { TenantDirectory } from '../server/http/tenants';
import { openSecretIn } from '../server/crypto/at-rest';
import { SECRET_PURPOSE } from '../server/auth/federation';

let s: TestServer;
let idp: TestIdp;
let issuer: string;
let callback: string;
let adminToken: string;
let clientId: string;
let patientId: string;
const REDIRECT = 'http://127.0.0.1:9/callback';
const DR_TOTP = newTotpSecret();
const LABEL = 'Practice SSO';
let ipSeq = 0;
const browser = () => new Browser(`10.88.${Math.floor(++ipSeq / 250)}.${ipSeq % 250}`);
const events: AuthEvent[] = [];
let offEvents: () => void;

const admin = (method: 'get' | 'put' | 'delete', p: string, token = adminToken) => s.anon[method](`/auth/${s.tenant}${p}`).set('Authorization', `Bearer ${token}`);

beforeAll(async () => {
  s = await startTestServer({ DEMO: 'false' });
  issuer = `${s.url}/auth/${s.tenant}`;
  callback = `${issuer}/federation/callback`;
  idp = await startTestIdp([callback], {
    drdoe: { email: 'Dr.Doe@example.org', email_verified: true }, // case differs from the local account
    nursemfa: { email: 'nurse@example.org', email_verified: true, amr: ['pwd', 'mfa'] },
    stranger: { email: 'stranger@example.org', email_verified: true },
    unverified: { email: 'dr.doe@example.org', email_verified: false },
    noemail: {},
    anna: { email: 'anna@example.org', email_verified: true },
  });
  adminToken = await s.token({ role: 'admin', sub: 'admin-1', fhirUser: 'Practitioner/admin-1', scope: 'user/*.cruds' });
  patientId = (await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', name: [{ family: 'Fed' }] })).body.id;
  await createUser(s.db.app, s.tenant, { email: 'dr.doe@example.org', role: 'practitioner', fhirUser: 'Practitioner/fed-1', totpSecret: DR_TOTP });
  await createUser(s.db.app, s.tenant, { email: 'nurse@example.org', role: 'nurse', fhirUser: 'Practitioner/fed-2' });
  await createUser(s.db.app, s.tenant, { email: 'anna@example.org', role: 'patient', fhirUser: `Patient/${patientId}` });
  const r = await s.anon.post(`/auth/${s.tenant}/admin/clients`).set('Authorization', `Bearer ${adminToken}`).send({ kind: 'public', client_name: 'fed app', redirect_uris: [REDIRECT] });
  clientId = r.body.client_id;
  offEvents = onAuthEvent((e) => {
    if (e.tenant === s.tenant) events.push(e);
  });
  const put = await admin('put', '/admin/federation').send({ issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret, label: LABEL });
  expect(put.status).toBe(200);
});

afterAll(async () => {
  offEvents?.();
  await idp?.close();
  await s?.close();
});

/** SMART authorize at our server; returns the sign-in page and the PKCE verifier. */
async function authorize(b: Browser, scope = 'openid fhirUser user/*.rs', tenantIssuer = issuer, client = clientId) {
  const { verifier, challenge } = pkce();
  const login = await b.go(authorizeUrl(tenantIssuer, { response_type: 'code', client_id: client, redirect_uri: REDIRECT, scope, state: 'app-state', aud: tenantIssuer.replace('/auth/', '/fhir/'), code_challenge: challenge, code_challenge_method: 'S256' }), REDIRECT);
  return { login, verifier };
}

/** "Sign in with …" and the IdP's sign-in page as `account`; stops at our callback (not followed). */
async function viaIdp(b: Browser, login: Awaited<ReturnType<typeof authorize>>['login'], account: string) {
  const idpPage = await b.submit(login, 'federation', { go: '1' }, callback);
  if (idpPage.location?.startsWith(callback)) return idpPage; // still signed in at the IdP
  expect(idpPage.url.startsWith(idp.issuer)).toBe(true);
  return b.submit(idpPage, 'login', { account }, callback);
}

describe('sign-in through the external identity provider', () => {
  test('practitioner: IdP, then our TOTP, code, token, FHIR read', async () => {
    const b = browser();
    const { login, verifier } = await authorize(b);
    expect(login.status).toBe(200);
    expect(login.html).toContain(`Sign in with ${LABEL}`);
    const atCallback = await viaIdp(b, login, 'drdoe');
    expect(atCallback.location!.startsWith(callback)).toBe(true);
    const cb = new URL(atCallback.location!);
    expect(cb.searchParams.get('state')).toBeTruthy();
    expect(cb.searchParams.get('iss')).toBe(idp.issuer);
    // our callback: the IdP did no MFA (amr pwd), so the TOTP step follows
    const totp = await b.go(atCallback.location!, REDIRECT);
    expect(totp.status).toBe(200);
    expect(totp.html).toContain('Verification code');
    expect(totp.html).not.toContain('Key:');
    const done = await b.submit(totp, 'totp', { code: totpCode(DR_TOTP) }, REDIRECT);
    const back = new URL(done.location!);
    expect(back.searchParams.get('state')).toBe('app-state');
    const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code: back.searchParams.get('code')!, redirect_uri: REDIRECT, client_id: clientId, code_verifier: verifier });
    expect(tok.status).toBe(200);
    const claims = decodeJwt(tok.body.access_token);
    expect(claims).toMatchObject({ iss: issuer, aud: s.baseUrl, tenant: s.tenant, role: 'practitioner', fhirUser: 'Practitioner/fed-1', client_id: clientId });
    const id = decodeJwt(tok.body.id_token);
    expect(id.fhirUser).toBe(`${s.baseUrl}/Practitioner/fed-1`);
    expect(id.amr).toEqual(['fed', 'otp']);
    const api = await s.as(tok.body.access_token);
    const read = await api.get(`${s.base}/Patient/${patientId}`);
    expect(read.status).toBe(200);
    expect(read.body.name[0].family).toBe('Fed');

    // the events (→ AuditEvents): federation-success, the TOTP challenge, login-success; no email
    const mine = events.filter((e) => e.ip === b.ip);
    expect(mine.map((e) => e.type)).toEqual(expect.arrayContaining(['federation-success', 'mfa-challenge', 'login-success']));
    expect(mine.find((e) => e.type === 'federation-success')).toMatchObject({ outcome: 'success', role: 'practitioner' });
    expect(JSON.stringify(events)).not.toMatch(/@example\.org/i);
    await s.audit.flush();
    const trail = await s.http.get(`${s.base}/AuditEvent?subtype=federation-success&_count=50`);
    expect(trail.body.entry?.length).toBeGreaterThanOrEqual(1);
    expect(trail.body.entry[0].resource.type.code).toBe('110114');
    expect(JSON.stringify(trail.body)).not.toMatch(/@example\.org/i);
  });

  test('the IdP reports MFA (amr mfa): no TOTP step; a staff member without TOTP signs in', async () => {
    const b = browser();
    const { login, verifier } = await authorize(b);
    const atCallback = await viaIdp(b, login, 'nursemfa');
    const done = await b.go(atCallback.location!, REDIRECT);
    if (!done.location?.startsWith(REDIRECT)) throw new Error(`${done.status} ${done.url} ${done.html.slice(0, 600)}`);
    const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code: new URL(done.location!).searchParams.get('code')!, redirect_uri: REDIRECT, client_id: clientId, code_verifier: verifier });
    expect(tok.status).toBe(200);
    expect(decodeJwt(tok.body.access_token)).toMatchObject({ role: 'nurse', fhirUser: 'Practitioner/fed-2' });
    expect(decodeJwt(tok.body.id_token).amr).toEqual(['fed', 'mfa']);
  });

  test('acceptIdpMfa false: the IdP MFA does not count, our TOTP enrolment follows', async () => {
    const cur = await admin('get', '/admin/federation');
    expect((await admin('put', '/admin/federation').send({ ...cur.body, acceptIdpMfa: false })).status).toBe(200);
    try {
      const b = browser();
      const { login } = await authorize(b);
      const page = await b.go((await viaIdp(b, login, 'nursemfa')).location!, REDIRECT);
      expect(page.html).toContain('Verification code');
      expect(page.html).toContain('Key:'); // the nurse has no TOTP yet: enrolment
    } finally {
      expect((await admin('put', '/admin/federation').send({ ...cur.body, acceptIdpMfa: true })).status).toBe(200);
    }
  });

  test('unknown email: refused on the sign-in page, no account created', async () => {
    const b = browser();
    const { login } = await authorize(b);
    const page = await b.go((await viaIdp(b, login, 'stranger')).location!, REDIRECT);
    expect(page.status).toBe(403);
    expect(page.html).toContain('There is no account at this practice');
    expect(page.html).toContain(`Sign in with ${LABEL}`); // the sign-in page again, other ways still offered
    expect(page.location).toBeUndefined();
    const users = await s.anon.get(`/auth/${s.tenant}/admin/users`).set('Authorization', `Bearer ${adminToken}`);
    expect(users.body.map((u: { email: string }) => u.email)).not.toContain('stranger@example.org');
    expect(events.filter((e) => e.ip === b.ip && e.type === 'federation-failure').map((e) => e.reason)).toEqual(['federation: no account for this identity']);
  });

  test('unverified email or no email: refused', async () => {
    const b = browser();
    const { login } = await authorize(b);
    const page = await b.go((await viaIdp(b, login, 'unverified')).location!, REDIRECT);
    expect(page.status).toBe(403);
    expect(page.html).toContain('not verified');
    const b2 = browser();
    const page2 = await b2.go((await viaIdp(b2, (await authorize(b2)).login, 'noemail')).location!, REDIRECT);
    expect(page2.status).toBe(403);
    expect(page2.html).toContain('did not tell us your email');
  });

  test('a patient may not use it by default (staff roles only)', async () => {
    const b = browser();
    const { login } = await authorize(b, 'openid fhirUser patient/*.rs');
    const page = await b.go((await viaIdp(b, login, 'anna')).location!, REDIRECT);
    expect(page.status).toBe(403);
    expect(page.html).toContain('cannot sign in with');
  });

  test('with roles including patient, a patient signs in through the IdP (no TOTP) to their own record', async () => {
    const cur = (await admin('get', '/admin/federation')).body;
    expect((await admin('put', '/admin/federation').send({ ...cur, roles: ['practitioner', 'patient'] })).status).toBe(200);
    try {
      const b = browser();
      const { login, verifier } = await authorize(b, 'openid fhirUser launch/patient patient/*.rs');
      const done = await b.go((await viaIdp(b, login, 'anna')).location!, REDIRECT);
      const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code: new URL(done.location!).searchParams.get('code')!, redirect_uri: REDIRECT, client_id: clientId, code_verifier: verifier });
      expect(tok.status).toBe(200);
      expect(tok.body.patient).toBe(patientId);
      expect(decodeJwt(tok.body.access_token)).toMatchObject({ role: 'patient', fhirUser: `Patient/${patientId}` });
    } finally {
      expect((await admin('put', '/admin/federation').send(cur)).status).toBe(200);
    }
  });

  test('tampered state and a callback in another browser are refused; the genuine one still works', async () => {
    const b = browser();
    const { login, verifier } = await authorize(b);
    const genuine = (await viaIdp(b, login, 'drdoe')).location!;
    const tampered = new URL(genuine);
    tampered.searchParams.set('state', tampered.searchParams.get('state')!.slice(0, -2) + 'xx');
    const t = await b.go(tampered.href, REDIRECT);
    expect(t.status).toBe(400);
    expect(t.html).toContain('not valid or has expired');
    // the same callback URL opened in another browser (no binding cookie): refused, and used up
    const other = browser();
    const o = await other.go(genuine, REDIRECT);
    expect(o.status).toBe(400);
    expect(o.html).toContain('not valid or has expired');
    // a new attempt in the right browser goes through
    const again = await viaIdp(b, login, 'drdoe');
    const totp = await b.go(again.location!, REDIRECT);
    const done = await b.submit(totp, 'totp', { code: totpCode(DR_TOTP) }, REDIRECT);
    const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code: new URL(done.location!).searchParams.get('code')!, redirect_uri: REDIRECT, client_id: clientId, code_verifier: verifier });
    expect(tok.status).toBe(200);
    // replaying the used callback: refused
    expect((await b.go(again.location!, REDIRECT)).status).toBe(400);
    expect(events.filter((e) => e.type === 'federation-failure' && (e.ip === b.ip || e.ip === other.ip)).map((e) => e.reason)).toEqual(
      expect.arrayContaining(['federation: unknown or reused state', 'federation: callback from another browser']),
    );
  });

  test('a tampered code or iss with the right state: the answer cannot be verified', async () => {
    for (const [param, value] of [['code', 'forged-code'], ['iss', 'https://evil.example']]) {
      const b = browser();
      const { login } = await authorize(b);
      const cb = new URL((await viaIdp(b, login, 'drdoe')).location!);
      cb.searchParams.set(param, value);
      const page = await b.go(cb.href, REDIRECT);
      expect(page.status).toBe(401);
      expect(page.html).toContain(`The answer from ${LABEL} could not be verified`);
      expect(events.filter((e) => e.ip === b.ip && e.type === 'federation-failure')).toHaveLength(1);
      expect(events.some((e) => e.ip === b.ip && e.type === 'federation-success')).toBe(false);
    }
  });

  test('a forged callback without state, and garbage parameters: a page, never a 500', async () => {
    const b = browser();
    for (const q of ['', '?code=x', '?state=', '?state=a&state=b', `?state=${'x'.repeat(5000)}`, '?error=access_denied']) {
      const p = await b.request(`${callback}${q}`);
      expect(p.status).toBe(400);
      expect(p.html).toContain('Sign-in error');
    }
  });

  test('the person cancels at the IdP: a clear message on our sign-in page', async () => {
    const b = browser();
    const { login } = await authorize(b);
    const page = await b.go((await viaIdp(b, login, 'deny')).location!, REDIRECT);
    expect(page.status).toBe(401);
    expect(page.html).toContain(`Sign-in with ${LABEL} was cancelled or refused`);
  });
});

describe('tenants without, or with an unreachable, identity provider', () => {
  async function otherTenant(fed?: object) {
    const t = await s.newTenant();
    const tAdmin = await s.token({ tenant: t, role: 'admin', sub: 'a', scope: 'user/*.rs' });
    const c = await s.anon.post(`/auth/${t}/admin/clients`).set('Authorization', `Bearer ${tAdmin}`).send({ kind: 'public', redirect_uris: [REDIRECT] });
    if (fed) expect((await s.anon.put(`/auth/${t}/admin/federation`).set('Authorization', `Bearer ${tAdmin}`).send(fed)).status).toBe(200);
    return { t, clientId: c.body.client_id as string, tIssuer: `${s.url}/auth/${t}` };
  }

  test('no federation: no button, and the step answers a page', async () => {
    const { clientId: c, tIssuer } = await otherTenant();
    const b = browser();
    const { login } = await authorize(b, 'user/*.rs', tIssuer, c);
    expect(login.status).toBe(200);
    expect(login.html).toContain('Practice staff');
    expect(login.html).not.toContain('Sign in with');
    const uid = /interaction\/([^/]+)\/login/.exec(login.html)![1];
    const p = await b.request(`${tIssuer}/interaction/${uid}/federation`, { method: 'POST', form: { go: '1' } });
    expect(p.status).toBe(404);
    expect(p.html).toContain('no external sign-in');
  });

  test('IdP down: a clear message, 502, not a 500', async () => {
    const { clientId: c, tIssuer } = await otherTenant({ issuer: 'http://127.0.0.1:1', clientId: 'x', clientSecret: 'y', label: 'Down IdP' });
    const b = browser();
    const { login } = await authorize(b, 'user/*.rs', tIssuer, c);
    expect(login.html).toContain('Sign in with Down IdP');
    const p = await b.submit(login, 'federation', { go: '1' }, REDIRECT);
    expect(p.status).toBe(502);
    expect(p.html).toContain('Down IdP cannot be reached right now');
    expect(p.html).toContain('Practice staff'); // the password form is still there
  });
});

describe('configuration', () => {
  test('admin API: admin only, validated, the secret never shown (nor in FHIR)', async () => {
    const pract = await s.token({ role: 'practitioner', sub: 'p', scope: 'user/*.rs' });
    expect((await s.anon.get(`/auth/${s.tenant}/admin/federation`)).status).toBe(401);
    expect((await admin('get', '/admin/federation', pract)).status).toBe(403);
    expect((await admin('put', '/admin/federation', pract).send({ issuer: idp.issuer, clientId: 'x' })).status).toBe(403);
    const got = await admin('get', '/admin/federation');
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ issuer: idp.issuer, clientId: idp.clientId, clientSecretSet: true, label: LABEL, scopes: 'openid email', requireEmailVerified: true, acceptIdpMfa: true, roles: ['admin', 'practitioner', 'physician', 'nurse'] });
    expect(JSON.stringify(got.body)).not.toContain(idp.clientSecret);
    for (const bad of [{}, { issuer: 'http://idp.example', clientId: 'x' }, { issuer: 'not a url', clientId: 'x' }, { issuer: 'https://idp.example' }, { issuer: 'https://idp.example', clientId: 'x', scopes: 'email' }, { issuer: 'https://idp.example', clientId: 'x', roles: ['root'] }, { issuer: 'https://idp.example', clientId: 'x', acceptIdpMfa: 'yes' }]) {
      const r = await admin('put', '/admin/federation').send(bad);
      expect(r.status).toBe(400);
      expect(r.body.error).toBe('invalid_request');
    }
    expect((await admin('put', '/admin/federation').set('Content-Type', 'application/json').send('[1,2]')).status).toBe(400);
    // a change without the secret keeps it (same issuer and client)
    const relabel = await admin('put', '/admin/federation').send({ issuer: idp.issuer, clientId: idp.clientId, label: LABEL });
    expect(relabel.body.clientSecretSet).toBe(true);
    const row = await new TenantDirectory(s.db.owner, 0).get(s.tenant);
    // stored encrypted with the tenant's data key (crypto/at-rest.ts), never in clear
    expect(row!.settings.federation!.clientSecret).toBeUndefined();
    expect(row!.settings.federation!.clientSecretSealed).toMatch(/^e1\.\d+\./);
    expect(JSON.stringify(row!.settings)).not.toContain(idp.clientSecret);
    expect(await openSecretIn(s.db.app, s.tenant, SECRET_PURPOSE, row!.settings.federation!.clientSecretSealed!)).toBe(idp.clientSecret);
    // FHIR never shows tenant settings
    for (const p of ['/metadata', '/.well-known/smart-configuration']) {
      const r = await s.http.get(`${s.base}${p}`);
      expect(r.status).toBe(200);
      expect(JSON.stringify(r.body)).not.toContain(idp.clientSecret);
    }
  });

  test('DELETE removes it', async () => {
    const t = await s.newTenant();
    const tAdmin = await s.token({ tenant: t, role: 'admin', sub: 'a', scope: 'user/*.rs' });
    const h = { Authorization: `Bearer ${tAdmin}` };
    expect((await s.anon.put(`/auth/${t}/admin/federation`).set(h).send({ issuer: 'https://idp.example', clientId: 'x' })).status).toBe(200);
    expect((await s.anon.delete(`/auth/${t}/admin/federation`).set(h)).status).toBe(204);
    expect((await s.anon.get(`/auth/${t}/admin/federation`).set(h)).status).toBe(404);
  });

  test('npm run tenant -- set-federation / remove-federation', async () => {
    const t = await s.newTenant();
    const root = path.resolve(__dirname, '..');
    const run = (args: string[], env: Record<string, string> = {}) =>
      promisify(execFile)(process.execPath, [path.join(root, 'node_modules/tsx/dist/cli.mjs'), 'server/cli/tenant.ts', ...args], {
        cwd: root,
        env: { ...process.env, DATABASE_URL: TEST_DATABASE_URL, MASTER_KEY: TEST_MASTER_KEY, LOG_LEVEL: 'warn', PUBLIC_URL: 'https://fhir.example', ...env },
        timeout: 60_000,
      });
    const out = await run(['set-federation', t, '--issuer', 'https://tenant.eu.auth0.com/', '--client-id', 'abc', '--label', 'Auth0', '--role', 'admin', '--role', 'practitioner', '--no-idp-mfa'], { FEDERATION_CLIENT_SECRET: 'from-env-secret' });
    expect(out.stdout).toContain(`https://fhir.example/auth/${t}/federation/callback`);
    expect(out.stdout).not.toContain('from-env-secret');
    const f = (await new TenantDirectory(s.db.owner, 0).get(t))!.settings.federation!;
    expect(f).toMatchObject({ issuer: 'https://tenant.eu.auth0.com/', clientId: 'abc', label: 'Auth0', roles: ['admin', 'practitioner'], acceptIdpMfa: false, requireEmailVerified: true });
    expect(JSON.stringify(f)).not.toContain('from-env-secret');
    expect(await openSecretIn(s.db.app, t, SECRET_PURPOSE, f.clientSecretSealed!)).toBe('from-env-secret');
    await expect(run(['set-federation', t, '--issuer', 'http://idp.example', '--client-id', 'abc'])).rejects.toMatchObject({ stderr: expect.stringContaining('https') });
    // a production server (https PUBLIC_URL) refuses an http loopback IdP (no discovery of local services)
    await expect(run(['set-federation', t, '--issuer', 'http://127.0.0.1:8081', '--client-id', 'abc'])).rejects.toMatchObject({ stderr: expect.stringContaining('https') });
    await run(['remove-federation', t]);
    expect((await new TenantDirectory(s.db.owner, 0).get(t))!.settings.federation).toBeUndefined();
  });
});
