/**
 * npm run bench:crypto — the CPU cost of encryption at rest per resource, in process (no
 * database): sealing and opening a Patient with an SSN (bench/patients.ts) and a SOAP-note
 * Composition, against the JSON.parse + JSON.stringify that every write and read does anyway
 * (the baseline measured in the same run), and the pre-check a resource without secrets pays.
 * Prints numbers; asserts nothing.
 */
import { randomBytes } from 'node:crypto';
import type { FhirResource as Resource } from 'fhir/r4';
import { openWith, sealWith } from '../server/crypto/at-rest';
import { blindIndexWith } from '../server/crypto/blind-index';
import type { TenantKeys } from '../server/crypto/keyring';
import { mayHoldSecrets } from '../server/crypto/policy';
import { makePatient } from './patients';

const keys: TenantKeys = { tenant: 'bench', activeVersion: 1, data: new Map([[1, randomBytes(32)]]), blind: blindIndexWith(randomBytes(32)) };
const ITER = Number(process.env.BENCH_CRYPTO_ITER ?? 20000);

function time(label: string, fn: () => unknown): number {
  for (let i = 0; i < 1000; i++) fn(); // warm-up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < ITER; i++) fn();
  const us = Number(process.hrtime.bigint() - t0) / 1000 / ITER;
  console.log(`${label.padEnd(58)} ${us.toFixed(2).padStart(8)} µs`);
  return us;
}

const para = 'Patient reports intermittent chest tightness on exertion, no radiation, resolves with rest. ';
const composition = {
  resourceType: 'Composition',
  id: 'c1',
  status: 'final',
  type: { coding: [{ system: 'http://loinc.org', code: '11506-3' }] },
  subject: { reference: 'Patient/p1' },
  date: '2026-11-30T10:00:00Z',
  author: [{ reference: 'Practitioner/d1' }],
  title: 'SOAP note',
  text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${para.repeat(8)}</div>` },
  section: ['Subjective', 'Objective', 'Assessment', 'Plan'].map((title) => ({
    title,
    text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${para.repeat(4)}</div>` },
  })),
} as unknown as Resource;
const patient = makePatient(42, "p1") as Resource;
const observation = { resourceType: 'Observation', id: 'o1', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] }, subject: { reference: 'Patient/p1' }, valueQuantity: { value: 72, unit: '/min' } } as Resource;

console.log(`encryption at rest, ${ITER} iterations each, node ${process.version}\n`);
for (const [name, r] of [['Patient with SSN', patient], ['Composition (5 narratives)', composition]] as const) {
  const json = JSON.stringify(r);
  const sealed = sealWith(keys, 'bench', r, json);
  console.log(`${name}: ${json.length} bytes plain, ${sealed.length} bytes stored`);
  const base = time(`  baseline: JSON.parse + JSON.stringify`, () => JSON.stringify(JSON.parse(json)));
  const s = time(`  seal (parse, encrypt fields, stringify)`, () => sealWith(keys, 'bench', r, json));
  const o = time(`  open (parse, decrypt fields, stringify)`, () => openWith(keys, 'bench', r.resourceType, r.id!, sealed));
  console.log(`  => seal ${(s / base).toFixed(1)}x, open ${(o / base).toFixed(1)}x the baseline\n`);
}
const oj = JSON.stringify(observation);
time('Observation (no secrets): pre-check on write', () => mayHoldSecrets('Observation', oj));
time('Observation (no secrets): pre-check on read', () => oj.includes('"url":"urn:fhir-practice-server:encrypted"'));
time('blind index of one SSN (HMAC-SHA256)', () => keys.blind('999-12-3456', 'http://hl7.org/fhir/sid/us-ssn'));
