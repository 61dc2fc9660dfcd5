// Drives the third-party client fhir-kit-client (ESM only) against a FHIR base given as argv[2].
// Prints one JSON object with what the client got back; test/fhir-kit-client.test.ts asserts on it.
import { Client } from 'fhir-kit-client';

const baseUrl = process.argv[2];
const family = process.argv[3] ?? 'Kitclient';
// The access token comes from the environment (FHIR_TOKEN), as a script of an operator would get it.
const client = new Client({ baseUrl, bearerToken: process.env.FHIR_TOKEN });
const out = {};

async function status(p) {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return { status: e.response?.status, data: typeof e.response?.data === 'string' ? JSON.parse(e.response.data) : e.response?.data };
  }
}

try {
  const cs = await client.capabilityStatement();
  out.capability = { resourceType: cs.resourceType, fhirVersion: cs.fhirVersion };

  const created = await client.create({
    resourceType: 'Patient',
    body: { resourceType: 'Patient', name: [{ family, given: ['Kit'] }], gender: 'female', birthDate: '1980-02-03' },
  });
  out.created = created;
  out.read = await client.read({ resourceType: 'Patient', id: created.id });

  out.updated = await client.update({
    resourceType: 'Patient',
    id: created.id,
    body: { ...out.read, active: true, name: [{ family, given: ['Kit', 'Updated'] }] },
  });
  out.vread1 = await client.vread({ resourceType: 'Patient', id: created.id, version: '1' });

  // A second patient, to see paging.
  const second = await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', name: [{ family }] } });
  out.search = await client.search({ resourceType: 'Patient', searchParams: { family, _count: 1 } });
  out.nextPage = (await client.nextPage({ bundle: out.search })) ?? null;
  out.postSearch = await client.search({ resourceType: 'Patient', searchParams: { family }, options: { postSearch: true } });

  out.history = await client.history({ resourceType: 'Patient', id: created.id });

  out.transaction = await client.transaction({
    body: {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:8d3e7f3c-6a8e-4f25-9d1e-3b6f0f1e2a11', resource: { resourceType: 'Patient', name: [{ family: `${family}-tx` }] }, request: { method: 'POST', url: 'Patient' } },
        {
          resource: { resourceType: 'Observation', status: 'final', code: { text: 'note' }, subject: { reference: 'urn:uuid:8d3e7f3c-6a8e-4f25-9d1e-3b6f0f1e2a11' } },
          request: { method: 'POST', url: 'Observation' },
        },
      ],
    },
  });

  await client.delete({ resourceType: 'Patient', id: second.id });
  out.readDeleted = await status(client.read({ resourceType: 'Patient', id: second.id }));
  out.readMissing = await status(client.read({ resourceType: 'Patient', id: 'no-such-patient' }));
  out.secondId = second.id;
  process.stdout.write(JSON.stringify(out));
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e?.message ?? e), response: e?.response ?? null, partial: out }));
  process.exitCode = 1;
}
