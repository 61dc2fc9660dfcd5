// The portal is a SMART app (public client "portal", PKCE) and a client of the tenant's FHIR API,
// nothing more. ?tenant=slug picks the practice. Tokens live in sessionStorage (this tab only).
(async function () {
  const params = new URLSearchParams(location.search);
  const tenant = params.get('tenant') || sessionStorage.getItem('portal.tenant') || 'demo';
  const base = `${location.origin}/fhir/${encodeURIComponent(tenant)}`;
  const redirectUri = `${location.origin}/`;
  const clientId = 'portal';
  document.getElementById('base').textContent = base;
  const status = document.getElementById('signin');
  const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

  async function signIn() {
    const conf = await (await fetch(`${base}/.well-known/smart-configuration`)).json();
    const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
    const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
    const state = b64url(crypto.getRandomValues(new Uint8Array(16)));
    sessionStorage.setItem('portal.pkce', JSON.stringify({ verifier, state, tokenEndpoint: conf.token_endpoint, tenant }));
    const u = new URL(conf.authorization_endpoint);
    for (const [k, v] of Object.entries({ response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope: 'openid fhirUser user/*.rs user/Appointment.cu', state, aud: base, code_challenge: challenge, code_challenge_method: 'S256' })) u.searchParams.set(k, v);
    location.assign(u.href);
  }

  async function finishSignIn() {
    const saved = JSON.parse(sessionStorage.getItem('portal.pkce') || 'null');
    sessionStorage.removeItem('portal.pkce');
    history.replaceState(null, '', location.pathname + (saved && saved.tenant !== 'demo' ? `?tenant=${saved.tenant}` : ''));
    if (!saved || params.get('state') !== saved.state) throw new Error('the sign-in answer does not match this tab');
    if (params.get('error')) throw new Error(`sign-in refused: ${params.get('error')}`);
    const res = await fetch(saved.tokenEndpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: params.get('code'), redirect_uri: redirectUri, client_id: clientId, code_verifier: saved.verifier }),
    });
    const tok = await res.json();
    if (!res.ok) throw new Error(`token request failed: ${tok.error_description || tok.error}`);
    sessionStorage.setItem('portal.token', JSON.stringify({ access: tok.access_token, exp: Date.now() + (tok.expires_in || 3600) * 1000 }));
    sessionStorage.setItem('portal.tenant', saved.tenant);
  }

  const tokenOf = () => {
    const t = JSON.parse(sessionStorage.getItem('portal.token') || 'null');
    return t && t.exp > Date.now() + 10000 ? t.access : undefined;
  };
  const get = async (path) => {
    const res = await fetch(base + path, { headers: { Accept: 'application/fhir+json', Authorization: `Bearer ${tokenOf()}` } });
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return res.json();
  };
  const list = (id, items) => {
    const ul = document.getElementById(id);
    ul.replaceChildren(...(items.length ? items : ['None yet']).map((t) => Object.assign(document.createElement('li'), { textContent: t })));
  };
  const button = (label, fn) => Object.assign(document.createElement('button'), { textContent: label, onclick: fn });
  const post = async (path, body) => {
    const res = await fetch(base + path, {
      method: 'POST',
      headers: { Accept: 'application/fhir+json', 'Content-Type': 'application/fhir+json', Authorization: `Bearer ${tokenOf()}` },
      body: JSON.stringify(body),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((json.issue && json.issue[0] && json.issue[0].diagnostics) || `HTTP ${res.status}`);
    return json;
  };
  /** The signed-in person, from the access token's fhirUser claim (e.g. Patient/123). */
  const fhirUser = () => {
    try {
      const part = tokenOf().split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part)).fhirUser;
    } catch {
      return undefined;
    }
  };
  const when = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });

  /** A patient books and cancels their own visits: Appointment/$find, $book and $cancel. */
  async function showBooking(patientId) {
    document.getElementById('booking').hidden = false;
    const say = (t) => (document.getElementById('booking-status').textContent = t);
    const now = Date.now();
    const mine = await get(`/Appointment?patient=Patient/${patientId}&status=booked&date=ge${new Date(now).toISOString()}&_sort=date&_count=20`);
    const items = (mine.entry || []).map((e) => {
      const a = e.resource;
      const li = document.createElement('li');
      li.append(`${when.format(new Date(a.start))} `, button('Cancel', async () => {
        try {
          await post(`/Appointment/${a.id}/$cancel`, { resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'Cancelled by the patient in the portal' }] });
          say(`Cancelled: ${when.format(new Date(a.start))}.`);
          await showBooking(patientId);
        } catch (err) {
          say(err.message);
        }
      }));
      return li;
    });
    const ul = document.getElementById('mine');
    ul.replaceChildren(...(items.length ? items : [Object.assign(document.createElement('li'), { textContent: 'None booked' })]));
    const start = new Date(now + 86400000).toISOString();
    const end = new Date(now + 15 * 86400000).toISOString();
    const found = await get(`/Appointment/$find?start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}&_count=8`);
    const proposals = (found.entry || []).map((e) => e.resource).filter((a) => a.resourceType === 'Appointment');
    document.getElementById('proposals').replaceChildren(...proposals.map((a) => {
      const li = document.createElement('li');
      const who = (a.participant || []).map((p) => p.actor && p.actor.display).filter(Boolean).join(', ');
      li.append(`${when.format(new Date(a.start))}${who ? ` with ${who}` : ''} `, button('Book', async () => {
        try {
          const booked = await post('/Appointment/$book', { resourceType: 'Parameters', parameter: [{ name: 'appointment-resource', resource: a }] });
          const b = booked.entry && booked.entry[0] && booked.entry[0].resource;
          say(`Booked: ${when.format(new Date(b.start))}. A confirmation is on its way by email.`);
          await showBooking(patientId);
        } catch (err) {
          say(err.message);
          await showBooking(patientId);
        }
      }));
      return li;
    }));
    if (!proposals.length) say('No free times in the next two weeks.');
  }

  try {
    if (params.get('code') || params.get('error')) await finishSignIn();
  } catch (err) {
    status.textContent = `Sign-in failed: ${err.message}. `;
  }
  const cs = await (await fetch(`${base}/metadata`)).json().catch(() => undefined);
  if (cs && cs.software) document.getElementById('server').textContent = `${cs.software.name} ${cs.software.version}, FHIR ${cs.fhirVersion}, ${cs.rest[0].resource.length} resource types.`;
  if (!tokenOf()) {
    status.append('Sign in to see the practice. ', button('Sign in', () => signIn().catch((e) => (status.textContent = e.message))));
    list('practitioners', ['Sign in first']);
    list('slots', ['Sign in first']);
    return;
  }
  status.replaceChildren('Signed in. ', button('Sign out', () => { sessionStorage.removeItem('portal.token'); location.reload(); }));
  try {
    const orgs = await get('/Organization?_count=1');
    const org = orgs.entry && orgs.entry[0] && orgs.entry[0].resource;
    if (org && org.name) {
      document.getElementById('practice').textContent = org.name;
      document.title = org.name;
    }
    const pr = await get('/Practitioner?_count=20');
    list('practitioners', (pr.entry || []).map((e) => {
      const n = (e.resource.name || [])[0] || {};
      return [...(n.prefix || []), ...(n.given || []), n.family].filter(Boolean).join(' ');
    }));
    const now = new Date().toISOString();
    const slots = await get(`/Slot?status=free&start=ge${now}&_sort=start&_count=20`);
    const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
    list('slots', (slots.entry || [])
      .map((e) => e.resource)
      .sort((a, b) => a.start.localeCompare(b.start))
      .map((s) => `${fmt.format(new Date(s.start))} (${Math.round((Date.parse(s.end) - Date.parse(s.start)) / 60000)} min)`));
    const me = fhirUser();
    if (me && me.startsWith('Patient/')) await showBooking(me.slice('Patient/'.length));
  } catch (err) {
    document.getElementById('server').textContent = `Could not read the FHIR API: ${err.message}`;
  }
})();
