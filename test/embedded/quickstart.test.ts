/**
 * Runs the README's start command (npm start) exactly as a new user would: no DATABASE_URL, so the
 * embedded PGlite database in DATA_DIR, a demo tenant with demo data, and the FHIR base printed.
 */
import { spawn, ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '../..');
let dataDir: string;
let child: ChildProcess | undefined;
let base: string;
let output = '';
let token = '';

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function start(): Promise<void> {
  const port = await freePort();
  output = '';
  const env = { ...process.env, PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn' } as NodeJS.ProcessEnv;
  delete env.DATABASE_URL;
  delete env.REDIS_URL;
  child = spawn('npm', ['start', '--silent'], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const deadline = Date.now() + 90_000;
  while (!/FHIR endpoint:\s+(\S+)/.test(output)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`server did not start:\n${output}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  base = /FHIR endpoint:\s+(\S+)/.exec(output)![1];
  token = await tokenFromCli(env);
}

/** The README's way to get a token: npm run token, with the server's PORT and DATA_DIR. */
async function tokenFromCli(env: NodeJS.ProcessEnv): Promise<string> {
  const out = await new Promise<string>((resolve, reject) => {
    const c = spawn('npm', ['run', '-s', 'token', '--', '--tenant', 'demo', '--scope', 'system/*.*'], { cwd: ROOT, env });
    let so = '';
    let se = '';
    c.stdout.on('data', (d) => (so += d));
    c.stderr.on('data', (d) => (se += d));
    c.on('exit', (code) => (code === 0 ? resolve(so.trim()) : reject(new Error(`npm run token failed: ${se}`))));
  });
  expect(out).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
  return out;
}

/** fetch with the access token, as every FHIR call needs one. */
function api(url: string, init: RequestInit = {}): Promise<Response> {
  return fetch(url, { ...init, headers: { ...(init.headers as Record<string, string>), Authorization: `Bearer ${token}` } });
}

async function stop(): Promise<void> {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child!.once('exit', r));
  process.kill(-child.pid!, 'SIGTERM');
  await exited;
}

beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhir-embedded-'));
  await start();
});

afterAll(async () => {
  await stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const json = async (res: Response) => ({ status: res.status, headers: res.headers, body: await res.json() });

test('prints the FHIR base and serves the CapabilityStatement', async () => {
  expect(output).toMatch(/Portal:\s+http/);
  expect(output).toMatch(/Access token:\s+.*npm run -s token/);
  const anon = await fetch(`${base}/Patient`);
  expect(anon.status).toBe(401);
  expect(anon.headers.get('www-authenticate')).toMatch(/^Bearer realm=/);
  expect(base).toMatch(/\/fhir\/demo$/);
  const r = await json(await api(`${base}/metadata`));
  expect(r.status).toBe(200);
  expect(r.body.resourceType).toBe('CapabilityStatement');
  expect(r.body.fhirVersion).toBe('4.0.1');
});

test('the demo tenant has demo data, searchable', async () => {
  const p = await json(await api(`${base}/Patient?family=moreau`));
  expect(p.body.total).toBe(1);
  expect(p.body.entry[0].resource.name[0].given[0]).toBe('Élise');
  const slots = await json(await api(`${base}/Slot?status=free&_summary=count`));
  expect(slots.body.total).toBeGreaterThan(0);
  const pr = await json(await api(`${base}/Practitioner?family=rivera`));
  expect(pr.body.total).toBe(1);
});

test('the demo practitioner has hours: $find proposes, $book books, a second $book of the slot is a 409, $cancel frees it', async () => {
  const now = Date.now();
  const post = (url: string, body: unknown) =>
    api(url, { method: 'POST', headers: { 'Content-Type': 'application/fhir+json' }, body: JSON.stringify(body) });
  const pr = await json(await api(`${base}/Practitioner?family=rivera`));
  const practitioner = `Practitioner/${pr.body.entry[0].resource.id}`;
  const found = await json(await post(`${base}/Appointment/$find`, {
    resourceType: 'Parameters',
    parameter: [
      { name: 'start', valueDateTime: new Date(now + 86_400_000).toISOString() },
      { name: 'end', valueDateTime: new Date(now + 8 * 86_400_000).toISOString() },
      { name: 'practitioner', valueReference: { reference: practitioner } },
    ],
  }));
  expect(found.status).toBe(200);
  expect(found.body.total).toBeGreaterThanOrEqual(20); // 5 weekdays x 7 sessions (lunch blocked)
  const proposal = found.body.entry[0].resource;
  expect(proposal.minutesDuration).toBe(50);
  const patient = (await json(await api(`${base}/Patient?family=okafor`))).body.entry[0].resource.id;
  const body = { resourceType: 'Parameters', parameter: [{ name: 'appointment-resource', resource: proposal }, { name: 'patient-reference', valueReference: { reference: `Patient/${patient}` } }] };
  const [a, b] = await Promise.all([post(`${base}/Appointment/$book`, body), post(`${base}/Appointment/$book`, body)]);
  expect([a.status, b.status].sort()).toEqual([201, 409]);
  const booked = await json(a.status === 201 ? a : b);
  const id = booked.body.entry[0].resource.id;
  const cancelled = await json(await post(`${base}/Appointment/${id}/$cancel`, { resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'smoke test' }] }));
  expect(cancelled.status).toBe(200);
  expect(cancelled.body.status).toBe('cancelled');
  expect((await post(`${base}/Appointment/$book`, body)).status).toBe(201); // the slot is free again
});

test('create, update, history and a transaction work on the embedded database', async () => {
  const c = await json(
    await api(`${base}/Patient`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Smoketest' }] }),
    }),
  );
  expect(c.status).toBe(201);
  const u = await json(
    await api(`${base}/Patient/${c.body.id}`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/fhir+json', 'If-Match': 'W/"1"' },
      body: JSON.stringify({ resourceType: 'Patient', id: c.body.id, name: [{ family: 'Smoketest' }], active: true }),
    }),
  );
  expect(u.status).toBe(200);
  expect(u.headers.get('etag')).toBe('W/"2"');
  const h = await json(await api(`${base}/Patient/${c.body.id}/_history`));
  expect(h.body.entry).toHaveLength(2);
  const t = await json(
    await api(base, {
      method: 'POST',
      headers: { 'Content-Type': 'application/fhir+json' },
      body: JSON.stringify({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { fullUrl: 'urn:uuid:0b0e7f4c-1a4e-4b55-9e0c-5b7a8e0d0001', resource: { resourceType: 'Patient', name: [{ family: 'Txsmoke' }] }, request: { method: 'POST', url: 'Patient' } },
          {
            resource: { resourceType: 'Observation', status: 'final', code: { text: 'note' }, subject: { reference: 'urn:uuid:0b0e7f4c-1a4e-4b55-9e0c-5b7a8e0d0001' } },
            request: { method: 'POST', url: 'Observation' },
          },
        ],
      }),
    }),
  );
  expect(t.status).toBe(200);
  const obsId = t.body.entry[1].response.location.split('/')[1];
  const o = await json(await api(`${base}/Observation/${obsId}`));
  expect(o.body.subject.reference).toBe(t.body.entry[0].response.location.split('/_history')[0]);
});

test('data survives a restart (same DATA_DIR)', async () => {
  const before = await json(await api(`${base}/Patient?family=smoketest`));
  expect(before.body.total).toBe(1);
  await stop();
  await start();
  const after = await json(await api(`${base}/Patient?family=smoketest`));
  expect(after.body.total).toBe(1);
  const demo = await json(await api(`${base}/Patient?_summary=count`));
  expect(demo.body.total).toBe(5); // 3 demo patients (loaded once) + 2 created above
});

test('health and readiness', async () => {
  const origin = new URL(base).origin;
  expect((await fetch(`${origin}/healthz`)).status).toBe(200);
  const ready = await json(await fetch(`${origin}/readyz`));
  expect(ready.body.checks.database).toBe('ok');
});

test('the demo users printed in the banner sign in through the portal (SMART, PKCE)', async () => {
  const { Browser, pkce, authorizeUrl, tokenRequest } = await import('../helpers/smart-browser');
  const origin = new URL(base).origin;
  const issuer = `${origin}/auth/demo`;
  const redirect = `${origin}/`;
  const email = /practitioner\s+(\S+@\S+) \/ (\S+)/.exec(output)!;
  const b = new Browser();
  const { verifier, challenge } = pkce();
  const login = await b.go(authorizeUrl(issuer, { response_type: 'code', client_id: 'portal', redirect_uri: redirect, scope: 'openid fhirUser user/*.rs', state: 's', aud: base, code_challenge: challenge, code_challenge_method: 'S256' }), `${redirect}?`);
  const totp = await b.submit(login, 'login', { email: email[1], password: email[2] }, `${redirect}?`);
  const code = /current code is <b>(\d{6})<\/b>/.exec(totp.html)![1];
  const done = await b.submit(totp, 'totp', { code }, `${redirect}?`);
  const tok = await tokenRequest(issuer, { grant_type: 'authorization_code', code: new URL(done.location!).searchParams.get('code')!, redirect_uri: redirect, client_id: 'portal', code_verifier: verifier });
  expect(tok.status).toBe(200);
  const r = await fetch(`${base}/Slot?status=free&_count=1`, { headers: { Authorization: `Bearer ${tok.body.access_token}` } });
  expect(r.status).toBe(200);
  // the patient: code from the demo outbox
  const p = new Browser('10.2.2.2');
  const p2 = pkce();
  const l2 = await p.go(authorizeUrl(issuer, { response_type: 'code', client_id: 'portal', redirect_uri: redirect, scope: 'openid fhirUser user/*.rs', state: 't', aud: base, code_challenge: p2.challenge, code_challenge_method: 'S256' }), `${redirect}?`);
  const patientEmail = /patient\s+(\S+@\S+)/.exec(output)![1];
  const codePage = await p.submit(l2, 'email', { email: patientEmail }, `${redirect}?`);
  const mail = /sign-in code is (\d{6})/.exec(await (await fetch(`${issuer}/outbox`)).text())![1];
  const d2 = await p.submit(codePage, 'code', { code: mail }, `${redirect}?`);
  const t2 = await tokenRequest(issuer, { grant_type: 'authorization_code', code: new URL(d2.location!).searchParams.get('code')!, redirect_uri: redirect, client_id: 'portal', code_verifier: p2.verifier });
  expect(t2.status).toBe(200);
  expect(t2.body.patient).toBeTruthy();
});

test('the demo outbox and a practitioner\'s calendar feed work on the embedded database', async () => {
  const origin = new URL(base).origin;
  expect(output).toContain(`${origin}/outbox/demo`);
  expect(output).toMatch(/Jobs:\s+in-process runner/);
  expect((await fetch(`${origin}/outbox/demo`)).status).toBe(200);
  const prac = await (await api(`${base}/Practitioner?_count=1`)).json();
  const id = prac.entry[0].resource.id;
  const issued = await api(`${base}/Practitioner/${id}/$calendar-token`, { method: 'POST', headers: { 'Content-Type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Parameters' }) });
  expect(issued.status).toBe(200);
  const url = (await issued.json()).parameter.find((p: { name: string }) => p.name === 'url').valueUrl;
  const feed = await fetch(url);
  expect(feed.status).toBe(200);
  expect(feed.headers.get('content-type')).toBe('text/calendar; charset=utf-8');
  expect(await feed.text()).toMatch(/^BEGIN:VCALENDAR\r\nVERSION:2\.0\r\n/);
});

test('waitlist on the embedded database: a cancellation offers the Slot to the waiting patient, the claim link books it', async () => {
  const now = Date.now();
  const origin = new URL(base).origin;
  const post = (url: string, body: unknown, method = 'POST') =>
    api(url, { method, headers: { 'Content-Type': 'application/fhir+json' }, body: JSON.stringify(body) });
  const practitioner = `Practitioner/${(await json(await api(`${base}/Practitioner?family=rivera`))).body.entry[0].resource.id}`;
  const waiting = await json(await post(`${base}/Patient`, { resourceType: 'Patient', name: [{ family: 'Waitlist' }], telecom: [{ system: 'email', value: 'waitlist@embedded.example' }] }));
  const other = (await json(await api(`${base}/Patient?family=okafor`))).body.entry[0].resource.id;
  const found = await json(await post(`${base}/Appointment/$find`, {
    resourceType: 'Parameters',
    parameter: [
      { name: 'start', valueDateTime: new Date(now + 9 * 86_400_000).toISOString() },
      { name: 'end', valueDateTime: new Date(now + 16 * 86_400_000).toISOString() },
      { name: 'practitioner', valueReference: { reference: practitioner } },
    ],
  }));
  const proposal = found.body.entry[0].resource;
  const booked = await json(await post(`${base}/Appointment/$book`, { resourceType: 'Parameters', parameter: [{ name: 'appointment-resource', resource: proposal }, { name: 'patient-reference', valueReference: { reference: `Patient/${other}` } }] }));
  expect(booked.status).toBe(201);
  const appt = booked.body.entry[0].resource;
  const entry = await json(await post(`${base}/Appointment`, {
    resourceType: 'Appointment',
    status: 'waitlist',
    requestedPeriod: [{ start: new Date(Date.parse(appt.start) - 86_400_000).toISOString(), end: new Date(Date.parse(appt.end) + 86_400_000).toISOString() }],
    participant: [{ actor: { reference: `Patient/${waiting.body.id}` }, status: 'needs-action' }, { actor: { reference: practitioner }, status: 'needs-action' }],
  }));
  expect(entry.status).toBe(201);
  expect((await post(`${base}/Appointment/${appt.id}/$cancel`, { resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'smoke test' }] })).status).toBe(200);
  const slotId = appt.slot[0].reference.replace('Slot/', '');
  expect((await json(await api(`${base}/Slot/${slotId}`))).body.status).toBe('busy-tentative');
  // the in-process runner sends the offer to the demo outbox within seconds
  let link: string | undefined;
  for (let i = 0; i < 50 && !link; i++) {
    const html = await (await fetch(`${origin}/outbox/demo`)).text();
    link = /(http\S+\/waitlist\/demo\/offers\/[A-Za-z0-9_-]{43})/.exec(html)?.[1];
    if (!link) await new Promise((r) => setTimeout(r, 200));
  }
  expect(link).toBeDefined();
  const claimAt = `${origin}${new URL(link!).pathname}`;
  expect((await fetch(claimAt)).status).toBe(200);
  expect((await fetch(claimAt, { method: 'POST' })).status).toBe(200);
  const after = (await json(await api(`${base}/Appointment/${entry.body.id}`))).body;
  expect(after.status).toBe('booked');
  expect(after.slot[0].reference).toBe(`Slot/${slotId}`);
  expect((await json(await api(`${base}/Slot/${slotId}`))).body.status).toBe('busy');
  expect((await fetch(claimAt, { method: 'POST' })).status).toBe(410);
});

test('a patient books and cancels a visit in the portal (headless Chromium)', async () => {
  // Debian's chromium (installed by .ci/run); CHROMIUM_PATH points elsewhere
  const { chromium } = require('playwright-core') as typeof import('playwright-core');
  const origin = new URL(base).origin;
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    await page.goto(`${origin}/`);
    await page.click('text=Sign in');
    await page.fill('form[action$="/email"] input[name=email]', 'patient@demo.practice');
    await page.click('text=Email me a sign-in code');
    await page.waitForSelector('input[name=code]');
    const code = /sign-in code is (\d{6})/.exec(await (await fetch(`${origin}/outbox/demo`)).text())![1];
    await page.fill('input[name=code]', code);
    await page.click('button:has-text("Sign in")');
    // back in the portal, signed in as the patient: free times with Book buttons
    await page.waitForSelector('#proposals li button', { timeout: 30_000 });
    const first = (await page.textContent('#proposals li:first-child'))!.replace(/Book$/, '').trim();
    const booked = async () => (await (await api(`${base}/Appointment?status=booked&_summary=count`)).json()).total as number;
    const before = await booked();
    await page.click('#proposals li:first-child button');
    await page.waitForFunction(() => /^Booked: /.test(document.getElementById('booking-status')!.textContent ?? ''), null, { timeout: 30_000 });
    expect(await page.textContent('#booking-status')).toContain(first);
    await page.waitForSelector('#mine li button');
    // (earlier tests of this file may have booked for the demo patient too)
    const mine = () => page.$$eval('#mine li', (l) => l.map((x) => x.textContent));
    expect(await mine()).toContain(`${first} Cancel`);
    // the booking is real: the FHIR API has one more booked Appointment, and cancelling removes it
    expect(await booked()).toBe(before + 1);
    await page.click(`#mine li:has-text("${first}") button`);
    await page.waitForFunction(() => /^Cancelled: /.test(document.getElementById('booking-status')!.textContent ?? ''), null, { timeout: 30_000 });
    await page.waitForFunction((t) => ![...document.querySelectorAll('#mine li')].some((li) => li.textContent === `${t} Cancel`), first, { timeout: 30_000 });
    expect(await booked()).toBe(before);
  } finally {
    await browser.close();
  }
});
