/**
 * The SMART on FHIR authorization server, end to end over real HTTP and real PostgreSQL:
 * discovery, standalone and EHR launches with PKCE (staff with password + TOTP, patients with an
 * emailed code through a real SMTP server), refresh tokens, introspection, backend services,
 * lockout, and the tokens read FHIR data through the unchanged TokenVerifier.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { SMTPServer } from 'smtp-server';
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { authorizeUrl, Browser, pkce, staffSignIn, tokenRequest } from './helpers/smart-browser';
import { createUser } from '../server/auth/users';
import { newTotpSecret, totpCode } from '../server/auth/totp';
import { AuthEvent, onAuthEvent } from '../server/auth/events';

let s: TestServer;
let smtp: SMTPServer;
const mails: string[] = [];
let issuer: string;
let adminToken: string;
let patientId: string;
let otherPatientId: string;
let encounterId: string;
const REDIRECT = 'http://127.0.0.1:9/callback';
const PW = 'correct horse battery';
const DR_TOTP = newTotpSecret();
let ipSeq = 0;
const browser = () => new Browser(`10.77.${Math.floor(++ipSeq / 250)}.${ipSeq % 250}`);

async function admin(method: 'post' | 'get', path: string, body?: unknown) {
  const r = s.anon[method](`/auth/${s.tenant}${path}`).set('Authorization', `Bearer ${adminToken}`);
  return body ? r.send(body as object) : r;
}

beforeAll(async () => {
  smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    onData(stream, _session, cb) {
      let text = '';
      stream.on('data', (d) => (text += d.toString()));
      stream.on('end', () => {
        mails.push(text);
        cb();
      });
    },
  });
  await new Promise<void>((r) => smtp.listen(0, '127.0.0.1', () => r()));
  const port = (smtp.server.address() as AddressInfo).port;
  s = await startTestServer({ SMTP_URL: `smtp://127.0.0.1:${port}`, DEMO: 'false' });
  issuer = `${s.url}/auth/${s.tenant}`;
  adminToken = await s.token({ role: 'admin', sub: 'admin-1', fhirUser: 'Practitioner/admin-1', scope: 'user/*.cruds' });
  const mk = async (resource: object) => (await s.http.post(`${s.base}/${(resource as { resourceType: string }).resourceType}`).set('Content-Type', FHIR_JSON).send(resource)).body.id;
  patientId = await mk({ resourceType: 'Patient', name: [{ family: 'Moreau', given: ['Anna'] }], birthDate: '1980-01-02' });
  otherPatientId = await mk({ resourceType: 'Patient', name: [{ family: 'Other', given: ['Bob'] }] });
  encounterId = await mk({ resourceType: 'Encounter', status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' }, subject: { reference: `Patient/${patientId}` } });
  await mk({ resourceType: 'Observation', status: 'final', code: { text: 'weight' }, subject: { reference: `Patient/${patientId}` } });
  await mk({ resourceType: 'Observation', status: 'final', code: { text: 'weight' }, subject: { reference: `Patient/${otherPatientId}` } });
  await createUser(s.db.app, s.tenant, { email: 'dr@example.org', role: 'practitioner', password: PW, fhirUser: 'Practitioner/p1', totpSecret: DR_TOTP });
  await createUser(s.db.app, s.tenant, { email: 'new.doc@example.org', role: 'physician', password: PW, fhirUser: 'Practitioner/p2' });
  await createUser(s.db.app, s.tenant, { email: 'anna@example.org', role: 'patient', fhirUser: `Patient/${patientId}` });
});

afterAll(async () => {
  await s?.close();
  await new Promise<void>((r) => smtp?.close(() => r()));
});

async function registerApp(kind: 'public' | 'confidential' = 'public', scope?: string) {
  const r = await admin('post', '/admin/clients', { kind, client_name: 'test app', redirect_uris: [REDIRECT], ...(scope ? { scope } : {}) });
  if (r.status !== 201) throw new Error(`registration: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as { client_id: string; client_secret?: string };
}

describe('discovery', () => {
  test('.well-known/smart-configuration: public JSON, S256 only, absolute endpoints', async () => {
    const r = await s.anon.get(`${s.base}/.well-known/smart-configuration`).set('Accept', 'text/html');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/application\/json/);
    expect(r.body.code_challenge_methods_supported).toEqual(['S256']);
    expect(r.body.issuer).toBe(issuer);
    for (const [k, v] of Object.entries(r.body)) if (k.endsWith('_endpoint')) expect(String(v)).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/auth\//);
    expect(r.body.capabilities).toEqual(expect.arrayContaining(['launch-standalone', 'launch-ehr', 'client-public', 'permission-v2', 'sso-openid-connect']));
    expect(r.body.grant_types_supported).toEqual(expect.arrayContaining(['authorization_code', 'client_credentials']));
  });

  test('unknown tenant: 404', async () => {
    expect((await s.anon.get('/fhir/no-such-tenant/.well-known/smart-configuration')).status).toBe(404);
  });

  test('CapabilityStatement carries the SMART oauth-uris extension', async () => {
    const r = await s.anon.get(`${s.base}/metadata`);
    const sec = r.body.rest[0].security;
    expect(sec.service[0].coding[0].code).toBe('SMART-on-FHIR');
    const uris = Object.fromEntries(sec.extension[0].extension.map((e: { url: string; valueUri: string }) => [e.url, e.valueUri]));
    expect(uris.token).toBe(`${issuer}/token`);
    expect(uris.authorize).toBe(`${issuer}/authorize`);
  });

  test('openid-configuration is served by the tenant issuer', async () => {
    const r = await fetch(`${issuer}/.well-known/openid-configuration`);
    expect(r.status).toBe(200);
    expect(((await r.json()) as { issuer: string }).issuer).toBe(issuer);
  });
});

describe('standalone launch (practitioner, password + TOTP, PKCE)', () => {
  test('sign in, pick a patient, exchange the code, read the patient with the token', async () => {
    const app = await registerApp();
    const b = browser();
    const { verifier, challenge } = pkce();
    const state = randomUUID();
    const scope = 'openid fhirUser launch/patient patient/*.rs offline_access';
    const login = await b.go(authorizeUrl(issuer, { response_type: 'code', client_id: app.client_id, redirect_uri: REDIRECT, scope, state, aud: s.baseUrl, code_challenge: challenge, code_challenge_method: 'S256' }), REDIRECT);
    expect(login.status).toBe(200);
    expect(login.html).toContain('Sign in');
    // first sign-in of this physician: TOTP enrolment (the page shows the key)
    const totpPage = await b.submit(login, 'login', { email: 'new.doc@example.org', password: PW }, REDIRECT);
    const key = /Key: <code>([A-Z2-7]+)<\/code>/.exec(totpPage.html)![1];
    const picker = await b.submit(totpPage, 'totp', { code: totpCode(key) }, REDIRECT);
    expect(picker.html).toContain('Choose a patient');
    const done = await b.submit(picker, 'patient', { patient: patientId }, REDIRECT);
    const cb = new URL(done.location!);
    expect(cb.searchParams.get('state')).toBe(state);
    const code = cb.searchParams.get('code')!;
    expect(code).toBeTruthy();

    const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT, client_id: app.client_id, code_verifier: verifier });
    expect(tok.status).toBe(200);
    expect(tok.headers.get('cache-control')).toMatch(/no-store/);
    expect(tok.body.token_type).toMatch(/bearer/i);
    expect(tok.body.patient).toBe(patientId);
    expect(tok.body.need_patient_banner).toBe(true);
    expect(tok.body.smart_style_url).toMatch(/^http/);
    expect(tok.body.refresh_token).toBeTruthy();
    expect(tok.body.scope.split(' ')).toEqual(expect.arrayContaining(['openid', 'fhirUser', 'launch/patient', 'offline_access', 'patient/*.rs']));
    const claims = decodeJwt(tok.body.access_token);
    expect(claims).toMatchObject({ iss: issuer, aud: s.baseUrl, tenant: s.tenant, patient: patientId, role: 'physician', fhirUser: 'Practitioner/p2', client_id: app.client_id });
    expect(String(claims.scope).split(' ')).toEqual(expect.arrayContaining(['patient/*.rs']));
    const idToken = decodeJwt(tok.body.id_token);
    expect(idToken.fhirUser).toBe(`${s.baseUrl}/Practitioner/p2`);

    const api = await s.as(tok.body.access_token);
    const pat = await api.get(`${s.base}/Patient/${patientId}`);
    expect(pat.status).toBe(200);
    expect(pat.body.name[0].family).toBe('Moreau');
    expect([403, 404]).toContain((await api.get(`${s.base}/Patient/${otherPatientId}`)).status);
    const obs = await api.get(`${s.base}/Observation`);
    expect(obs.status).toBe(200);
    expect(obs.body.entry.map((e: any) => e.resource.subject.reference)).toEqual([`Patient/${patientId}`]);
    expect((await api.post(`${s.base}/Observation`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${patientId}` } })).status).toBe(403);

    // refresh token: a new access token for the same grant and context
    const ref = await tokenRequest(issuer, { grant_type: 'refresh_token', refresh_token: tok.body.refresh_token, client_id: app.client_id });
    expect(ref.status).toBe(200);
    expect(ref.body.patient).toBe(patientId);
    expect((await (await s.as(ref.body.access_token)).get(`${s.base}/Patient/${patientId}`)).status).toBe(200);

    // introspection: the access token and the (rotated) refresh token
    const sys = await s.token();
    const intro = await s.anon.post(`/auth/${s.tenant}/token/introspection`).set('Authorization', `Bearer ${sys}`).type('form').send({ token: tok.body.access_token });
    expect(intro.status).toBe(200);
    expect(intro.body).toMatchObject({ active: true, client_id: app.client_id, patient: patientId, tenant: s.tenant });
    expect(intro.body.scope).toContain('patient/*.rs');
    expect(typeof intro.body.exp).toBe('number');
    const introRt = await s.anon.post(`/auth/${s.tenant}/token/introspection`).set('Authorization', `Bearer ${sys}`).type('form').send({ token: ref.body.refresh_token ?? tok.body.refresh_token });
    expect(introRt.body).toMatchObject({ active: true, client_id: app.client_id, patient: patientId });
    // revoking the refresh token ends it
    const rt = ref.body.refresh_token ?? tok.body.refresh_token;
    const rev = await fetch(`${issuer}/token/revocation`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: rt, client_id: app.client_id }).toString() });
    expect(rev.status).toBe(200);
    const introRevoked = await s.anon.post(`/auth/${s.tenant}/token/introspection`).set('Authorization', `Bearer ${sys}`).type('form').send({ token: rt });
    expect(introRevoked.body).toEqual({ active: false });
    expect((await tokenRequest(issuer, { grant_type: 'refresh_token', refresh_token: rt, client_id: app.client_id })).body.error).toBe('invalid_grant');
    const bogus = await s.anon.post(`/auth/${s.tenant}/token/introspection`).set('Authorization', `Bearer ${sys}`).type('form').send({ token: 'nope' });
    expect(bogus.body).toEqual({ active: false });
    expect((await s.anon.post(`/auth/${s.tenant}/token/introspection`).type('form').send({ token: 'nope' })).status).toBe(401);

    // EHR launch in the same browser session: the practitioner is signed in, no picker
    const launch = await s.anon.post(`/auth/${s.tenant}/launch`).set('Authorization', `Bearer ${await s.token({ role: 'practitioner', sub: 'p1', fhirUser: 'Practitioner/p1', scope: 'user/*.rs' })}`).send({ patient: patientId, encounter: encounterId });
    expect(launch.status).toBe(201);
    const p2 = pkce();
    const ehr = await b.go(authorizeUrl(issuer, { response_type: 'code', client_id: app.client_id, redirect_uri: REDIRECT, scope: 'launch openid fhirUser patient/Observation.rs patient/Encounter.rs', state: 's2', aud: s.baseUrl, launch: launch.body.launch, code_challenge: p2.challenge, code_challenge_method: 'S256' }), REDIRECT);
    const code2 = new URL(ehr.location!).searchParams.get('code')!;
    expect(code2).toBeTruthy();
    const tok2 = await tokenRequest(issuer, { grant_type: 'authorization_code', code: code2, redirect_uri: REDIRECT, client_id: app.client_id, code_verifier: p2.verifier });
    expect(tok2.status).toBe(200);
    expect(tok2.body.patient).toBe(patientId);
    expect(tok2.body.encounter).toBe(encounterId);
    expect(tok2.body.need_patient_banner).toBe(false);
    expect(tok2.body.refresh_token).toBeUndefined();
    const api2 = await s.as(tok2.body.access_token);
    expect((await api2.get(`${s.base}/Encounter/${encounterId}`)).status).toBe(200);
    expect((await api2.get(`${s.base}/Patient/${patientId}`)).status).toBe(403);
  });

  test('an unknown launch id is refused', async () => {
    const app = await registerApp();
    const b = browser();
    const { challenge } = pkce();
    const login = await b.go(authorizeUrl(issuer, { response_type: 'code', client_id: app.client_id, redirect_uri: REDIRECT, scope: 'launch patient/*.rs', state: 'x', aud: s.baseUrl, launch: 'nope', code_challenge: challenge, code_challenge_method: 'S256' }), REDIRECT);
    const out = await staffSignIn(b, login, 'dr@example.org', PW, REDIRECT, DR_TOTP);
    expect(new URL(out.location!).searchParams.get('error')).toBe('invalid_request');
  });
});

describe('PKCE is required', () => {
  let clientId: string;
  beforeAll(async () => {
    clientId = (await registerApp()).client_id;
  });
  const base = () => ({ response_type: 'code', client_id: clientId, redirect_uri: REDIRECT, scope: 'patient/*.rs launch/patient', state: 'st', aud: s.baseUrl });

  test('no code_challenge: error redirect invalid_request', async () => {
    const p = await browser().go(authorizeUrl(issuer, base()), REDIRECT);
    expect(new URL(p.location!).searchParams.get('error')).toBe('invalid_request');
  });

  test('code_challenge_method=plain: error redirect invalid_request', async () => {
    const p = await browser().go(authorizeUrl(issuer, { ...base(), code_challenge: 'a'.repeat(43), code_challenge_method: 'plain' }), REDIRECT);
    expect(new URL(p.location!).searchParams.get('error')).toBe('invalid_request');
  });

  test('a wrong code_verifier: invalid_grant', async () => {
    const b = browser();
    const { challenge } = pkce();
    const login = await b.go(authorizeUrl(issuer, { ...base(), code_challenge: challenge, code_challenge_method: 'S256' }), REDIRECT);
    const picker = await staffSignIn(b, login, 'dr@example.org', PW, REDIRECT, DR_TOTP);
    const done = await b.submit(picker, 'patient', { patient: patientId }, REDIRECT);
    const code = new URL(done.location!).searchParams.get('code')!;
    const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT, client_id: clientId, code_verifier: pkce().verifier });
    expect(tok.status).toBe(400);
    expect(tok.body.error).toBe('invalid_grant');
  });

  test('aud other than the FHIR base: refused', async () => {
    const { challenge } = pkce();
    const p = await browser().go(authorizeUrl(issuer, { ...base(), aud: 'https://elsewhere.example/fhir', code_challenge: challenge, code_challenge_method: 'S256' }), REDIRECT);
    expect(new URL(p.location!).searchParams.get('error')).toBe('invalid_target');
  });
});

describe('patients sign in with an emailed one-time code (real SMTP)', () => {
  test('code by email, own record only, no patient picker', async () => {
    const app = await registerApp();
    const b = browser();
    const { verifier, challenge } = pkce();
    const login = await b.go(authorizeUrl(issuer, { response_type: 'code', client_id: app.client_id, redirect_uri: REDIRECT, scope: 'openid fhirUser launch/patient patient/*.rs', state: 'p', aud: s.baseUrl, code_challenge: challenge, code_challenge_method: 'S256' }), REDIRECT);
    const before = mails.length;
    const codePage = await b.submit(login, 'email', { email: 'anna@example.org' }, REDIRECT);
    expect(codePage.html).toContain('Check your email');
    for (let i = 0; i < 50 && mails.length === before; i++) await new Promise((r) => setTimeout(r, 50));
    const mail = mails[mails.length - 1];
    expect(mail).toMatch(/To: anna@example.org/i);
    const code = /sign-in code is (\d{6})/.exec(mail)![1];
    // a wrong code first: refused
    expect((await b.submit(codePage, 'code', { code: code === '000000' ? '111111' : '000000' }, REDIRECT)).status).toBe(401);
    const done = await b.submit(codePage, 'code', { code }, REDIRECT);
    const authCode = new URL(done.location!).searchParams.get('code')!;
    const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code: authCode, redirect_uri: REDIRECT, client_id: app.client_id, code_verifier: verifier });
    expect(tok.status).toBe(200);
    expect(tok.body.patient).toBe(patientId);
    expect(decodeJwt(tok.body.access_token)).toMatchObject({ role: 'patient', fhirUser: `Patient/${patientId}` });
    const api = await s.as(tok.body.access_token);
    expect((await api.get(`${s.base}/Patient/${patientId}`)).status).toBe(200);
    expect([403, 404]).toContain((await api.get(`${s.base}/Patient/${otherPatientId}`)).status);
  });

  test('the magic link signs in, once', async () => {
    const app = await registerApp();
    const b = browser();
    const { verifier, challenge } = pkce();
    const login = await b.go(authorizeUrl(issuer, { response_type: 'code', client_id: app.client_id, redirect_uri: REDIRECT, scope: 'patient/*.rs', state: 'm', aud: s.baseUrl, code_challenge: challenge, code_challenge_method: 'S256' }), REDIRECT);
    const before = mails.length;
    await b.submit(login, 'email', { email: 'anna@example.org' }, REDIRECT);
    for (let i = 0; i < 50 && mails.length === before; i++) await new Promise((r) => setTimeout(r, 50));
    const body = mails[mails.length - 1].replace(/=\r?\n/g, '').replace(/=3D/gi, '=');
    const link = /(http:\/\/\S+\/magic\?t=[A-Za-z0-9_-]+)/.exec(body)![1];
    const done = await b.go(link, REDIRECT);
    const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code: new URL(done.location!).searchParams.get('code')!, redirect_uri: REDIRECT, client_id: app.client_id, code_verifier: verifier });
    expect(tok.body.patient).toBe(patientId);
    expect((await b.go(link, REDIRECT)).status).toBe(400); // that sign-in is over
  });

  test('an unknown address gets the same answer and no mail', async () => {
    const app = await registerApp();
    const b = browser();
    const login = await b.go(authorizeUrl(issuer, { response_type: 'code', client_id: app.client_id, redirect_uri: REDIRECT, scope: 'patient/*.rs', state: 'p', aud: s.baseUrl, code_challenge: pkce().challenge, code_challenge_method: 'S256' }), REDIRECT);
    const before = mails.length;
    const page = await b.submit(login, 'email', { email: 'nobody@example.org' }, REDIRECT);
    expect(page.html).toContain('Check your email');
    await new Promise((r) => setTimeout(r, 200));
    expect(mails.length).toBe(before);
  });
});

describe('TOTP and lockout', () => {
  let clientId: string;
  beforeAll(async () => {
    clientId = (await registerApp()).client_id;
  });
  const start = (b: Browser) =>
    b.go(authorizeUrl(issuer, { response_type: 'code', client_id: clientId, redirect_uri: REDIRECT, scope: 'user/*.rs', state: 't', aud: s.baseUrl, code_challenge: pkce().challenge, code_challenge_method: 'S256' }), REDIRECT);

  test('a practitioner with the right password but no TOTP code gets no authorization code', async () => {
    const secret = newTotpSecret();
    await createUser(s.db.app, s.tenant, { email: 'nurse@example.org', role: 'nurse', password: PW, totpSecret: secret });
    const b = browser();
    const login = await start(b);
    const totp = await b.submit(login, 'login', { email: 'nurse@example.org', password: PW }, REDIRECT);
    expect(totp.status).toBe(200);
    expect(totp.html).toContain('Verification code');
    expect(totp.html).not.toContain('Key:'); // enrolled already
    const wrong = String((Number(totpCode(secret)) + 500000) % 1000000).padStart(6, '0');
    const bad = await b.submit(totp, 'totp', { code: wrong }, REDIRECT);
    expect(bad.status).toBe(401);
    expect(bad.location).toBeUndefined();
    // skipping the TOTP step: the interaction still asks for sign-in
    const again = await b.go(login.url, REDIRECT);
    expect(again.html).toContain('Verification code');
    const ok = await b.submit(bad, 'totp', { code: totpCode(secret) }, REDIRECT);
    expect(new URL(ok.location!).searchParams.get('code')).toBeTruthy();
  });

  test('the tenant setting signInAttemptsPer15Minutes sets the limit', async () => {
    await s.setSettings({ rateLimitPerMinute: 0, signInAttemptsPer15Minutes: 3 });
    try {
      const b = browser();
      let page = await start(b);
      for (let i = 0; i < 2; i++) {
        page = await b.submit(page, 'login', { email: 'dr@example.org', password: 'not it ' + i }, REDIRECT);
        expect(page.html).not.toContain('Too many failed sign-ins');
      }
      page = await b.submit(page, 'login', { email: 'dr@example.org', password: 'not it 3' }, REDIRECT);
      expect(page.html).toContain('Too many failed sign-ins');
      expect((await b.submit(page, 'login', { email: 'dr@example.org', password: PW }, REDIRECT)).status).toBe(429);
    } finally {
      await s.setSettings({ rateLimitPerMinute: 0 });
    }
  });

  test('5 failed sign-ins from one IP lock it out, even with the right password', async () => {
    const events: AuthEvent[] = [];
    const off = onAuthEvent((e) => {
      if (e.tenant === s.tenant) events.push(e);
    });
    const b = browser();
    let page = await start(b);
    for (let i = 0; i < 5; i++) {
      page = await b.submit(page, 'login', { email: 'dr@example.org', password: 'wrong password ' + i }, REDIRECT);
      expect(page.status).toBe(401);
    }
    expect(page.html).toContain('Too many failed sign-ins');
    const locked = await b.submit(page, 'login', { email: 'dr@example.org', password: PW }, REDIRECT);
    expect(locked.status).toBe(429);
    expect(Number(locked.retryAfter)).toBeGreaterThan(0);
    // another IP is not affected
    const other = browser();
    const totp = await other.submit(await start(other), 'login', { email: 'dr@example.org', password: PW }, REDIRECT);
    expect(totp.html).toContain('Verification code');
    off();
    // the sign-in events for the audit trail: failures, the lockout, the MFA challenge; never the email
    const types = events.map((e) => e.type);
    expect(types.filter((t) => t === 'login-failure')).toHaveLength(5);
    expect(types).toEqual(expect.arrayContaining(['lockout', 'mfa-challenge']));
    expect(events.find((e) => e.type === 'lockout')).toMatchObject({ outcome: 'failure', ip: b.ip });
    expect(JSON.stringify(events)).not.toContain('dr@example.org');
    // ... and they are in the tenant's audit trail, searchable
    await s.audit.flush();
    const trail = await s.http.get(`${s.base}/AuditEvent?subtype=lockout,login-failure&_count=100`);
    const codes = trail.body.entry.map((e: { resource: { subtype: Array<{ code: string }>; type: { code: string }; outcome: string } }) => e.resource);
    expect(codes.filter((r: { subtype: Array<{ code: string }> }) => r.subtype[0].code === 'login-failure').length).toBeGreaterThanOrEqual(5);
    const lock = codes.find((r: { subtype: Array<{ code: string }> }) => r.subtype[0].code === 'lockout');
    expect(lock).toMatchObject({ type: { code: '110114' }, outcome: '4' });
    expect(JSON.stringify(trail.body)).not.toContain('dr@example.org');
  });
});

describe('client registration (tenant admin)', () => {
  test('needs an admin token', async () => {
    expect((await s.anon.post(`/auth/${s.tenant}/admin/clients`).send({ kind: 'public', redirect_uris: [REDIRECT] })).status).toBe(401);
    const pract = await s.token({ role: 'practitioner', sub: 'p1', fhirUser: 'Practitioner/p1', scope: 'user/*.cruds' });
    expect((await s.anon.post(`/auth/${s.tenant}/admin/clients`).set('Authorization', `Bearer ${pract}`).send({ kind: 'public', redirect_uris: [REDIRECT] })).status).toBe(403);
  });

  test('confidential client: secret returned once, client_secret_basic works, list hides secrets', async () => {
    const app = await registerApp('confidential');
    expect(app.client_secret).toBeTruthy();
    const list = await admin('get', '/admin/clients');
    const mine = list.body.find((c: any) => c.client_id === app.client_id);
    expect(mine).toBeTruthy();
    expect(mine.client_secret).toBeUndefined();
    const b = browser();
    const { verifier, challenge } = pkce();
    const login = await b.go(authorizeUrl(issuer, { response_type: 'code', client_id: app.client_id, redirect_uri: REDIRECT, scope: 'user/Patient.rs', state: 'c', aud: s.baseUrl, code_challenge: challenge, code_challenge_method: 'S256' }), REDIRECT);
    const done = await staffSignIn(b, login, 'dr@example.org', PW, REDIRECT, DR_TOTP);
    const code = new URL(done.location!).searchParams.get('code')!;
    const basic = 'Basic ' + Buffer.from(`${app.client_id}:${app.client_secret}`).toString('base64');
    const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier }, { Authorization: basic });
    expect(tok.status).toBe(200);
    expect(tok.body.scope).toBe('user/Patient.rs');
    expect(decodeJwt(tok.body.access_token).scope).toBe('user/Patient.rs');
    const api = await s.as(tok.body.access_token);
    expect((await api.get(`${s.base}/Patient?_count=5`)).status).toBe(200);
    expect((await api.get(`${s.base}/Observation`)).status).toBe(403);
    // the client introspects its own token with its credentials
    const intro = await s.anon.post(`/auth/${s.tenant}/token/introspection`).set('Authorization', basic).type('form').send({ token: tok.body.access_token });
    expect(intro.body).toMatchObject({ active: true, scope: 'user/Patient.rs', role: 'practitioner' });
  });

  test('scopes outside the client policy are not granted', async () => {
    const app = await registerApp('public', 'launch/patient patient/Observation.rs');
    const b = browser();
    const { verifier, challenge } = pkce();
    const login = await b.go(authorizeUrl(issuer, { response_type: 'code', client_id: app.client_id, redirect_uri: REDIRECT, scope: 'launch/patient patient/Observation.rs patient/Patient.rs', state: 'c', aud: s.baseUrl, code_challenge: challenge, code_challenge_method: 'S256' }), REDIRECT);
    const picker = await staffSignIn(b, login, 'dr@example.org', PW, REDIRECT, DR_TOTP);
    const done = await b.submit(picker, 'patient', { patient: patientId }, REDIRECT);
    const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code: new URL(done.location!).searchParams.get('code')!, redirect_uri: REDIRECT, client_id: app.client_id, code_verifier: verifier });
    expect(tok.status).toBe(200);
    expect(tok.body.scope.split(' ')).toContain('patient/Observation.rs');
    expect(tok.body.scope.split(' ')).not.toContain('patient/Patient.rs');
  });
});

describe('backend services (client_credentials + private_key_jwt)', () => {
  async function backendClient(alg: 'ES384' | 'RS384', byUrl = false) {
    const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
    const kid = randomUUID();
    const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
    let jwksServer: http.Server | undefined;
    let jwks_uri: string | undefined;
    if (byUrl) {
      jwksServer = http.createServer((_req, res) => res.setHeader('Content-Type', 'application/json').end(JSON.stringify({ keys: [jwk] })));
      await new Promise<void>((r) => jwksServer!.listen(0, '127.0.0.1', () => r()));
      jwks_uri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
    }
    const r = await admin('post', '/admin/clients', { kind: 'backend', client_name: 'lab feed', scope: 'system/Patient.rs system/Observation.rs', ...(byUrl ? { jwks_uri } : { jwks: { keys: [jwk] } }) });
    expect(r.status).toBe(201);
    const id = r.body.client_id as string;
    const assertion = (jti = randomUUID(), exp = '4m') =>
      new SignJWT({}).setProtectedHeader({ alg, kid, typ: 'JWT' }).setIssuer(id).setSubject(id).setAudience(`${issuer}/token`).setJti(jti).setIssuedAt().setExpirationTime(exp).sign(privateKey);
    const request = async (scope: string, a?: string) =>
      tokenRequest(issuer, { grant_type: 'client_credentials', scope, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: a ?? (await assertion()) });
    return { id, assertion, request, close: () => jwksServer?.close() };
  }

  test('ES384 inline JWKS: system token, read and search', async () => {
    const c = await backendClient('ES384');
    const tok = await c.request('system/Patient.rs system/Observation.rs');
    expect(tok.status).toBe(200);
    expect(tok.body.token_type).toMatch(/bearer/i);
    expect(tok.body.expires_in).toBeLessThanOrEqual(300);
    expect(tok.body.refresh_token).toBeUndefined();
    expect(decodeJwt(tok.body.access_token)).toMatchObject({ tenant: s.tenant, client_id: c.id, aud: s.baseUrl });
    const api = await s.as(tok.body.access_token);
    expect((await api.get(`${s.base}/Patient/${patientId}`)).status).toBe(200);
    const search = await api.get(`${s.base}/Observation?subject=Patient/${otherPatientId}`);
    expect(search.status).toBe(200);
    expect(search.body.entry).toHaveLength(1);
    expect((await api.get(`${s.base}/Encounter/${encounterId}`)).status).toBe(403);
  });

  test('RS384 with a JWKS URL', async () => {
    const c = await backendClient('RS384', true);
    try {
      const tok = await c.request('system/Patient.rs');
      expect(tok.status).toBe(200);
      expect((await (await s.as(tok.body.access_token)).get(`${s.base}/Patient?_count=1`)).status).toBe(200);
    } finally {
      c.close();
    }
  });

  test('replayed jti, far expiry, scope outside the policy: refused', async () => {
    const c = await backendClient('ES384');
    const a = await c.assertion();
    expect((await c.request('system/Patient.rs', a)).status).toBe(200);
    const replay = await c.request('system/Patient.rs', a);
    expect([400, 401]).toContain(replay.status);
    expect(replay.body.error).toBe('invalid_client');
    const far = await c.request('system/Patient.rs', await c.assertion(randomUUID(), '20m'));
    expect(far.body.error).toBe('invalid_client');
    const wide = await c.request('system/Encounter.rs');
    expect(wide.status).toBe(400);
    expect(wide.body.error).toBe('invalid_scope');
    const userScope = await c.request('user/Patient.rs');
    expect(userScope.body.error).toBe('invalid_scope');
  });
});

describe('sessions and TOTP codes', () => {
  test('session: 15 minutes idle, at most 8 hours after sign-in', async () => {
    const { sessionTtl } = await import('../server/auth/provider');
    const now = 1_800_000_000;
    expect(sessionTtl(now, now)).toBe(15 * 60);
    expect(sessionTtl(now - 7 * 3600, now)).toBe(15 * 60);
    expect(sessionTtl(now - 8 * 3600 + 60, now)).toBe(60);
    expect(sessionTtl(now - 9 * 3600, now)).toBe(1);
  });

  test('TOTP matches the RFC 6238 test vector', () => {
    // RFC 6238 appendix B, SHA-1 secret "12345678901234567890" at T=59 s -> 94287082 (8 digits; 6 digits: 287082)
    const { base32Encode } = jest.requireActual('../server/auth/totp');
    expect(totpCode(base32Encode(Buffer.from('12345678901234567890')), 59_000)).toBe('287082');
  });
});
