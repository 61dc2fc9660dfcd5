/** Deterministic, realistic-looking (fictional) Patient resources for the benchmarks. */
import type { Patient } from 'fhir/r4';

/** mulberry32: small seeded PRNG so every run loads the same data. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FAMILY = [
  'Okafor', 'Lindqvist', 'Moreau', 'García', 'Nguyen', 'Smith', 'Kowalski', 'Haddad', 'Müller', 'Rossi',
  'Tanaka', 'Johnson', 'Dubois', 'Novak', 'Singh', 'Fernández', 'Olsen', 'Brown', 'Costa', 'Ivanova',
  'Kim', 'Walker', 'Schmidt', 'Yilmaz', 'Jensen', 'Murphy', "O'Brien", 'Martins', 'Cohen', 'Park',
];
const GIVEN_F = ['Amara', 'Élise', 'Maria', 'Sofia', 'Hannah', 'Aisha', 'Mei', 'Olivia', 'Ingrid', 'Lucía', 'Zoe', 'Priya', 'Anna', 'Fatima'];
const GIVEN_M = ['Jonas', 'Liam', 'Mateo', 'Noah', 'Omar', 'Kenji', 'Lukas', 'David', 'Arjun', 'Tomás', 'Samuel', 'Ivan', 'Ethan', 'Yusuf'];
const STREETS = ['Harbor Street', 'Maple Avenue', 'Oak Lane', 'Elm Road', 'River Drive', 'Hillcrest Way', 'Station Road', 'Park Place'];
const CITIES: Array<[string, string, string]> = [
  ['Springfield', 'IL', '627'],
  ['Portland', 'OR', '972'],
  ['Madison', 'WI', '537'],
  ['Burlington', 'VT', '054'],
  ['Boulder', 'CO', '803'],
  ['Asheville', 'NC', '288'],
];

function pick<T>(r: () => number, list: readonly T[]): T {
  return list[Math.floor(r() * list.length)];
}

function digits(r: () => number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += Math.floor(r() * 10);
  return s;
}

/** Patient number `n` (same n -> same content). `id` is set only when given (for PUT). */
export function makePatient(n: number, id?: string): Patient {
  const r = rng(n * 7919 + 17);
  const female = r() < 0.5;
  const given = pick(r, female ? GIVEN_F : GIVEN_M);
  const middle = pick(r, female ? GIVEN_F : GIVEN_M);
  const family = pick(r, FAMILY);
  const [city, state, zip3] = pick(r, CITIES);
  const year = 1930 + Math.floor(r() * 90);
  const month = 1 + Math.floor(r() * 12);
  const day = 1 + Math.floor(r() * 28);
  const p: Patient = {
    resourceType: 'Patient',
    ...(id ? { id } : {}),
    identifier: [
      {
        use: 'usual',
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR', display: 'Medical record number' }] },
        system: 'urn:oid:2.16.840.1.113883.19.5.99999.1',
        value: `MRN-${String(n).padStart(8, '0')}`,
      },
      { use: 'official', system: 'http://hl7.org/fhir/sid/us-ssn', value: `999-${digits(r, 2)}-${digits(r, 4)}` },
    ],
    active: true,
    name: [
      { use: 'official', family, given: [given, middle], prefix: [female ? 'Ms.' : 'Mr.'] },
      ...(r() < 0.3 ? [{ use: 'nickname' as const, given: [given.slice(0, 3)] }] : []),
    ],
    telecom: [
      { system: 'phone', value: `+1-555-${digits(r, 3)}-${digits(r, 4)}`, use: r() < 0.5 ? 'mobile' : 'home', rank: 1 },
      { system: 'email', value: `${given.toLowerCase().normalize('NFD').replace(/[^a-z]/g, '')}.${n}@example.org`, use: 'home' },
    ],
    gender: female ? 'female' : 'male',
    birthDate: `${year}-${String(month).padStart(2, '0')}-${String(day).padStart(2, '0')}`,
    address: [
      {
        use: 'home',
        type: 'both',
        line: [`${1 + Math.floor(r() * 999)} ${pick(r, STREETS)}`, ...(r() < 0.2 ? [`Apt ${1 + Math.floor(r() * 40)}`] : [])],
        city,
        state,
        postalCode: `${zip3}${digits(r, 2)}`,
        country: 'US',
      },
    ],
    maritalStatus: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus', code: r() < 0.5 ? 'M' : 'S' }],
    },
    communication: [{ language: { coding: [{ system: 'urn:ietf:bcp:47', code: 'en-US' }] }, preferred: true }],
  };
  return p;
}
