/**
 * The lockout notice, over real HTTP, real PostgreSQL and a real SMTP server: when 5 failed
 * sign-ins lock an IP out, the owners of the accounts tried get one email per lockout window,
 * and each notice is an auth event (→ AuditEvent) without the address.
 */
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { startTestServer, TestServer } from './helpers/test-server';
import { authorizeUrl, Browser, pkce } from './helpers/smart-browser';
import { createUser, User } from '../server/auth/users';
import { newTotpSecret, totpCode } from '../server/auth/totp';
import { AuthEvent, onAuthEvent } from '../server/auth/events';

let s: TestServer;
let smtp: SMTPServer;
const mails: Array<{ to: string; text: string }> = [];
const events: AuthEvent[] = [];
let off: () => void;
let issuer: string;
let clientId: string;
let dr: User;
let nurse: User;
let doc2: User;
const PW = 'correct horse battery';
const NURSE_TOTP = newTotpSecret();
const REDIRECT = 'http://127.0.0.1:9/callback';
let ipSeq = 0;
const browser = () => new Browser(`10.99.0.${++ipSeq}`);

const decode = (raw: string) => raw.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_m, h) => String.fromCharCode(parseInt(h, 16))).replace(/\r?\n/g, ' ');
const mailsTo = (addr: string) => mails.filter((m) => m.to.toLowerCase() === addr.toLowerCase());
const settle = () => new Promise((r) => setTimeout(r, 400));
async function waitFor(pred: () => boolean) {
  for (let i = 0; i < 100 && !pred(); i++) await new Promise((r) => setTimeout(r, 50));
}

beforeAll(async () => {
  smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    onData(stream, session, cb) {
      let text = '';
      stream.on('data', (d) => (text += d.toString()));
      stream.on('end', () => {
        for (const rcpt of session.envelope.rcptTo) mails.push({ to: rcpt.address, text: decode(text) });
        cb();
      });
    },
  });
  await new Promise<void>((r) => smtp.listen(0, '127.0.0.1', () => r()));
  s = await startTestServer({ SMTP_URL: `smtp://127.0.0.1:${(smtp.server.address() as AddressInfo).port}`, DEMO: 'false' });
  issuer = `${s.url}/auth/${s.tenant}`;
  dr = await createUser(s.db.app, s.tenant, { email: 'dr.lock@example.org', role: 'practitioner', password: PW, totpSecret: newTotpSecret() });
  nurse = await createUser(s.db.app, s.tenant, { email: 'nurse.lock@example.org', role: 'nurse', password: PW, totpSecret: NURSE_TOTP });
  doc2 = await createUser(s.db.app, s.tenant, { email: 'doc2.lock@example.org', role: 'physician', password: PW });
  const admin = await s.token({ role: 'admin', sub: 'a', scope: 'user/*.rs' });
  clientId = (await s.anon.post(`/auth/${s.tenant}/admin/clients`).set('Authorization', `Bearer ${admin}`).send({ kind: 'public', redirect_uris: [REDIRECT] })).body.client_id;
  off = onAuthEvent((e) => {
    events.push(e);
  });
});

afterAll(async () => {
  off?.();
  await s?.close();
  await new Promise<void>((r) => smtp?.close(() => r()));
});

const start = (b: Browser) =>
  b.go(authorizeUrl(issuer, { response_type: 'code', client_id: clientId, redirect_uri: REDIRECT, scope: 'user/*.rs', state: 'x', aud: s.baseUrl, code_challenge: pkce().challenge, code_challenge_method: 'S256' }), REDIRECT);

async function failPasswords(b: Browser, emails: string[]) {
  let page = await start(b);
  for (const email of emails) page = await b.submit(page, 'login', { email, password: 'wrong password!' }, REDIRECT);
  expect(page.html).toContain('Too many failed sign-ins');
  return page;
}

test('a lockout from wrong passwords mails the account owner once, with practice, IP and time', async () => {
  const b = browser();
  const before = Date.now();
  await failPasswords(b, Array(5).fill('DR.LOCK@example.org'));
  await waitFor(() => mailsTo(dr.email).length > 0);
  const notices = mailsTo(dr.email);
  expect(notices).toHaveLength(1);
  const text = notices[0].text;
  expect(text).toContain(`Sign-in to Test tenant ${s.tenant} was locked after 5 failed attempts from ${b.ip} at `);
  expect(text).toContain('if this was not you, contact your administrator');
  const at = /at (\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC/.exec(text)![1];
  expect(Math.abs(Date.parse(`${at.replace(' ', 'T')}:00Z`) - before)).toBeLessThan(2 * 60_000);
  // the notice is an auth event and an AuditEvent, with the user id and never the address
  const ev = events.filter((e) => e.type === 'lockout-notice' && e.ip === b.ip);
  expect(ev).toEqual([expect.objectContaining({ outcome: 'success', userId: dr.id, role: 'practitioner' })]);
  expect(JSON.stringify(events)).not.toMatch(/@example\.org/i);
  await s.audit.flush();
  const trail = await s.http.get(`${s.base}/AuditEvent?subtype=lockout-notice&_count=50`);
  expect(trail.body.entry.length).toBeGreaterThanOrEqual(1);
  expect(trail.body.entry[0].resource.type.code).toBe('110114');
  expect(JSON.stringify(trail.body)).not.toMatch(/@example\.org/i);

  // a second lockout in the same window (another IP) locks, but sends no second notice
  const b2 = browser();
  await failPasswords(b2, Array(5).fill(dr.email));
  await settle();
  expect(mailsTo(dr.email)).toHaveLength(1);
  expect(events.filter((e) => e.type === 'lockout' && e.ip === b2.ip).length).toBeGreaterThanOrEqual(1);
  expect(events.filter((e) => e.type === 'lockout-notice' && e.ip === b2.ip)).toHaveLength(0);
});

test('wrong TOTP codes after the right password: the owner is told (their password is known)', async () => {
  const b = browser();
  let page = await b.submit(await start(b), 'login', { email: nurse.email, password: PW }, REDIRECT);
  const wrong = String((Number(totpCode(NURSE_TOTP)) + 500000) % 1000000).padStart(6, '0');
  for (let i = 0; i < 5 && page.html.includes('action="') && page.html.includes('/totp"'); i++) page = await b.submit(page, 'totp', { code: wrong }, REDIRECT);
  expect(page.status).toBe(429);
  await waitFor(() => mailsTo(nurse.email).length > 0);
  expect(mailsTo(nurse.email)).toHaveLength(1);
  expect(mailsTo(nurse.email)[0].text).toContain(`from ${b.ip}`);
});

test('a spray over several accounts notifies each existing one; unknown addresses get nothing', async () => {
  const b = browser();
  const before = mails.length;
  await failPasswords(b, ['nobody1@example.org', doc2.email, 'nobody2@example.org', doc2.email, 'nobody3@example.org']);
  await waitFor(() => mailsTo(doc2.email).length > 0);
  await settle();
  const fresh = mails.slice(before);
  expect(fresh.map((m) => m.to)).toEqual([doc2.email]);
  // only unknown addresses: a lockout without notices
  const b2 = browser();
  const n = mails.length;
  await failPasswords(b2, ['x1@example.org', 'x2@example.org', 'x3@example.org', 'x4@example.org', 'x5@example.org']);
  await settle();
  expect(mails.length).toBe(n);
  expect(events.filter((e) => e.type === 'lockout' && e.ip === b2.ip).length).toBeGreaterThanOrEqual(1);
});

test('the mail server being down changes nothing for the sign-in; the failed notice is an event', async () => {
  const down = await startTestServer({ SMTP_URL: 'smtp://127.0.0.1:1', DEMO: 'false' });
  try {
    const u = await createUser(down.db.app, down.tenant, { email: 'down@example.org', role: 'practitioner', password: PW });
    const admin = await down.token({ role: 'admin', sub: 'a', scope: 'user/*.rs' });
    const c = (await down.anon.post(`/auth/${down.tenant}/admin/clients`).set('Authorization', `Bearer ${admin}`).send({ kind: 'public', redirect_uris: [REDIRECT] })).body.client_id;
    const b = browser();
    let page = await b.go(authorizeUrl(`${down.url}/auth/${down.tenant}`, { response_type: 'code', client_id: c, redirect_uri: REDIRECT, scope: 'user/*.rs', state: 'x', aud: down.baseUrl, code_challenge: pkce().challenge, code_challenge_method: 'S256' }), REDIRECT);
    for (let i = 0; i < 5; i++) page = await b.submit(page, 'login', { email: u.email, password: 'wrong password!' }, REDIRECT);
    expect(page.status).toBe(401);
    expect(page.html).toContain('Too many failed sign-ins');
    await waitFor(() => events.some((e) => e.tenant === down.tenant && e.type === 'lockout-notice'));
    expect(events.filter((e) => e.tenant === down.tenant && e.type === 'lockout-notice')).toEqual([expect.objectContaining({ outcome: 'failure', reason: 'lockout notice could not be sent' })]);
  } finally {
    await down.close();
  }
});
