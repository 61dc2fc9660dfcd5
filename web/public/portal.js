// The portal is a client of the tenant's FHIR API, nothing more. ?tenant=slug picks the practice.
(async function () {
  const tenant = new URLSearchParams(location.search).get('tenant') || 'demo';
  const base = `${location.origin}/fhir/${encodeURIComponent(tenant)}`;
  document.getElementById('base').textContent = base;
  const get = async (path) => {
    const res = await fetch(base + path, { headers: { Accept: 'application/fhir+json' } });
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return res.json();
  };
  const list = (id, items) => {
    const ul = document.getElementById(id);
    ul.replaceChildren(...(items.length ? items : ['None yet']).map((t) => Object.assign(document.createElement('li'), { textContent: t })));
  };
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
    const slots = await get(`/Slot?status=free&start=ge${now}&_count=20`);
    const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
    list('slots', (slots.entry || [])
      .map((e) => e.resource)
      .sort((a, b) => a.start.localeCompare(b.start))
      .map((s) => `${fmt.format(new Date(s.start))} (${Math.round((Date.parse(s.end) - Date.parse(s.start)) / 60000)} min)`));
    const cs = await get('/metadata');
    document.getElementById('server').textContent =
      `${cs.software.name} ${cs.software.version}, FHIR ${cs.fhirVersion}, ${cs.rest[0].resource.length} resource types.`;
  } catch (err) {
    document.getElementById('server').textContent = `Could not reach the FHIR API: ${err.message}`;
  }
})();
