/**
 * A real SMART client, the `fhirclient` library (SMART Health IT's, Node adapter), completes a
 * standalone launch against this server: discovery from .well-known/smart-configuration, PKCE
 * S256, the authorization code exchange, then reads the patient in context and searches it.
 * The user's side (the sign-in pages) is the scripted browser of test/helpers/smart-browser.ts.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import smart from 'fhirclient';
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { Browser, staffSignIn } from './helpers/smart-browser';
import { createUser } from '../server/auth/users';
import { newTotpSecret } from '../server/auth/totp';

const APP = 'http://127.0.0.1:9';
const REDIRECT = `${APP}/callback`;
let s: TestServer;
let patientId: string;
let clientId: string;
const secret = newTotpSecret();

beforeAll(async () => {
  s = await startTestServer({ DEMO: 'false' });
  const mk = async (r: { resourceType: string }) => (await s.http.post(`${s.base}/${r.resourceType}`).set('Content-Type', FHIR_JSON).send(r)).body.id as string;
  patientId = await mk({ resourceType: 'Patient', name: [{ family: 'Fhirclient', given: ['Flora'] }] } as { resourceType: string });
  await mk({ resourceType: 'Observation', status: 'final', code: { text: 'mood' }, subject: { reference: `Patient/${patientId}` } } as { resourceType: string });
  await mk({ resourceType: 'Patient', name: [{ family: 'Someone-Else' }] } as { resourceType: string });
  await createUser(s.db.app, s.tenant, { email: 'fc.doc@example.org', role: 'practitioner', password: 'fhirclient-test-pw', fhirUser: 'Practitioner/fc1', totpSecret: secret });
  const admin = await s.token({ role: 'admin', sub: 'a1', fhirUser: 'Practitioner/a1', scope: 'user/*.cruds' });
  const reg = await s.anon.post(`/auth/${s.tenant}/admin/clients`).set('Authorization', `Bearer ${admin}`).send({ kind: 'public', client_name: 'fhirclient test', redirect_uris: [REDIRECT] });
  expect(reg.status).toBe(201);
  clientId = reg.body.client_id;
});
afterAll(() => s.close());

/** The app's own HTTP request as fhirclient's Node adapter sees it (the app runs at APP). */
function appRequest(pathAndQuery: string) {
  const req = { url: pathAndQuery, headers: { host: '127.0.0.1:9' }, socket: {}, method: 'GET' } as unknown as IncomingMessage;
  const res = { writeHead() {}, end() {}, setHeader() {} } as unknown as ServerResponse;
  return { req, res };
}

test('fhirclient: standalone launch with PKCE, then reads the patient in context', async () => {
  const store = new Map<string, unknown>();
  const storage = {
    get: async (k: string) => store.get(k),
    set: async (k: string, v: unknown) => void store.set(k, v),
    unset: async (k: string) => store.delete(k),
  };
  const launch = appRequest('/launch');
  const authorizeUrl = (await smart(launch.req, launch.res, storage).authorize({
    iss: s.baseUrl,
    clientId,
    scope: 'openid fhirUser launch/patient patient/*.rs',
    redirectUri: REDIRECT,
    pkceMode: 'required',
    noRedirect: true,
  })) as unknown as string;
  const u = new URL(authorizeUrl);
  expect(u.origin + u.pathname).toBe(`${s.url}/auth/${s.tenant}/authorize`);
  expect(u.searchParams.get('code_challenge_method')).toBe('S256');
  expect(u.searchParams.get('aud')).toBe(s.baseUrl);

  // the user signs in (password + TOTP) and picks the patient
  const b = new Browser('10.88.0.1');
  const login = await b.go(authorizeUrl, REDIRECT);
  const picker = await staffSignIn(b, login, 'fc.doc@example.org', 'fhirclient-test-pw', REDIRECT, secret);
  expect(picker.html).toContain('Choose a patient');
  const done = await b.submit(picker, 'patient', { patient: patientId }, REDIRECT);
  const cb = new URL(done.location!);
  expect(cb.origin + cb.pathname).toBe(REDIRECT);

  // back in the app: fhirclient exchanges the code (with its PKCE verifier) and has a client
  const back = appRequest(cb.pathname + cb.search);
  const client = await smart(back.req, back.res, storage).ready();
  expect(client.patient.id).toBe(patientId);
  expect(client.getFhirUser()).toBe(`Practitioner/fc1`); // fhirclient shortens the id_token fhirUser URL
  const patient = (await client.patient.read()) as unknown as { name: Array<{ family: string }> };
  expect(patient.name[0].family).toBe('Fhirclient');
  const obs = (await client.request(`Observation?patient=${patientId}`)) as { entry?: Array<{ resource: { code: { text: string } } }> };
  expect(obs.entry!.map((e) => e.resource.code.text)).toEqual(['mood']);
  // confined to that patient: the rest of the practice stays out of reach
  const all = (await client.request('Patient')) as { entry?: Array<{ resource: { id: string } }> };
  expect(all.entry!.map((e) => e.resource.id)).toEqual([patientId]);
});
