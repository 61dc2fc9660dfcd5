/**
 * One-off measurement of validator start-up and per-call cost (numbers go into profiles/README.md).
 *
 *   npx tsx profiles/bench-validator.ts
 */
import * as fs from 'fs';
import * as path from 'path';
import { validateResource, warmUpValidator } from './validator';

const FIXTURES = '/work/shared/fixtures/hl7-examples';

function ms(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function perCall(resource: unknown, n: number): number {
  for (let i = 0; i < Math.min(n, 20000); i++) validateResource(resource); // JIT warm-up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) validateResource(resource);
  return (ms(t0) * 1000) / n;
}

function load(name: string): unknown {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, name), 'utf8'));
}

let t0 = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
warmUpValidator(['Patient']);
const firstCompile = ms(t0);
const cpu = process.cpuUsage(cpu0);
const firstCompileCpu = (cpu.user + cpu.system) / 1000;

t0 = process.hrtime.bigint();
warmUpValidator(['Appointment']);
const secondType = ms(t0);

t0 = process.hrtime.bigint();
warmUpValidator();
const allTypes = ms(t0);

const minimal = { resourceType: 'Patient', id: 'p1', name: [{ family: 'Doe', given: ['Jane'] }], birthDate: '1970-01-01' };
const patientExample = load('Patient-example.json');
const appointment = load('Appointment-example.json');
const observation = load('Observation-blood-pressure.json');
const bundle = {
  resourceType: 'Bundle',
  type: 'transaction',
  entry: [patientExample, appointment, observation].map((resource) => ({
    resource,
    request: { method: 'POST', url: (resource as { resourceType: string }).resourceType },
  })),
};
const invalid = { resourceType: 'Patient', birthDate: '1970-13-45', foo: 1 };

const rows: [string, number][] = [
  ['Patient (minimal, valid)', perCall(minimal, 200000)],
  ['Patient-example.json (valid)', perCall(patientExample, 100000)],
  ['Appointment-example.json (valid, required-element walk)', perCall(appointment, 100000)],
  ['Observation-blood-pressure.json (valid)', perCall(observation, 100000)],
  ['transaction Bundle with the 3 resources above', perCall(bundle, 50000)],
  ['Patient with 2 errors', perCall(invalid, 100000)],
];

console.log(`node ${process.version}, ${process.platform}/${process.arch}`);
console.log(
  `first compile (load schema + registry, compile Patient): ${firstCompile.toFixed(0)} ms wall, ${firstCompileCpu.toFixed(0)} ms CPU`,
);
console.log(`second type (Appointment): ${secondType.toFixed(1)} ms`);
console.log(`remaining 144 types: ${allTypes.toFixed(0)} ms`);
for (const [name, us] of rows) console.log(`${name}: ${us.toFixed(2)} µs/validation`);
