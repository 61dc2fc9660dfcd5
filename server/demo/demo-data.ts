/** A small, fictional demo practice: loaded into the `demo` tenant on first start. */
import type { Bundle, BundleEntry, FhirResource as Resource } from 'fhir/r4';
import { EXT } from '../scheduling/rules';

function entry(fullUrl: string, resource: Resource): BundleEntry {
  return { fullUrl, resource, request: { method: 'POST', url: resource.resourceType } };
}

export function demoBundle(): Bundle {
  const org = 'urn:uuid:8e1f3a52-0000-4000-8000-000000000001';
  const pract = 'urn:uuid:8e1f3a52-0000-4000-8000-000000000002';
  const role = 'urn:uuid:8e1f3a52-0000-4000-8000-000000000003';
  const entries: BundleEntry[] = [
    entry(org, {
      resourceType: 'Organization',
      identifier: [{ system: 'urn:demo:practice', value: 'harbor-therapy' }],
      active: true,
      name: 'Harbor Street Therapy (demo)',
      telecom: [{ system: 'phone', value: '+1-555-0100' }, { system: 'email', value: 'front-desk@harbor.example' }],
    }),
    entry(pract, {
      resourceType: 'Practitioner',
      identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '9999999991' }],
      active: true,
      name: [{ family: 'Rivera', given: ['Dana'], prefix: ['Dr.'] }],
      telecom: [{ system: 'email', value: 'dana.rivera@harbor.example' }],
    }),
    entry(role, {
      resourceType: 'PractitionerRole',
      active: true,
      practitioner: { reference: pract },
      organization: { reference: org },
      code: [{ coding: [{ system: 'http://nucc.org/provider-taxonomy', code: '101YM0800X', display: 'Mental Health Counselor' }] }],
      // Weekly hours in the practice's time zone, a 50-minute session with a 10-minute buffer and a
      // lunch break: the server derives the Schedule and its Slots (docs/scheduling.md).
      availableTime: [{ daysOfWeek: ['mon', 'tue', 'wed', 'thu', 'fri'], availableStartTime: '09:00:00', availableEndTime: '17:00:00' }],
      extension: [
        { url: EXT.timeZone, valueCode: 'America/New_York' },
        {
          url: EXT.appointmentType,
          extension: [
            { url: 'type', valueCoding: { system: 'http://terminology.hl7.org/CodeSystem/v2-0276', code: 'ROUTINE', display: 'Therapy session' } },
            { url: 'minutes', valuePositiveInt: 50 },
            { url: 'buffer', valueUnsignedInt: 10 },
          ],
        },
        { url: EXT.recurringBlock, extension: [{ url: 'start', valueTime: '12:00:00' }, { url: 'end', valueTime: '13:00:00' }, { url: 'description', valueString: 'Lunch' }] },
      ],
    }),
  ];
  const patients = [
    { family: 'Okafor', given: 'Amara', birthDate: '1986-04-12', gender: 'female' },
    { family: 'Lindqvist', given: 'Jonas', birthDate: '1979-11-03', gender: 'male' },
    { family: 'Moreau', given: 'Élise', birthDate: '1994-07-28', gender: 'female' },
  ] as const;
  patients.forEach((p, i) => {
    const url = `urn:uuid:8e1f3a52-0000-4000-8000-0000000001${String(i).padStart(2, '0')}`;
    entries.push(
      entry(url, {
        resourceType: 'Patient',
        identifier: [{ system: 'urn:demo:mrn', value: `MRN-${1001 + i}` }],
        active: true,
        name: [{ family: p.family, given: [p.given] }],
        gender: p.gender,
        birthDate: p.birthDate,
        telecom: [{ system: 'email', value: `${p.given.toLowerCase().normalize('NFD').replace(/\p{Diacritic}/gu, '')}@patient.example` }],
        managingOrganization: { reference: org },
      }),
    );
    if (i === 0) {
      entries.push(
        entry(`urn:uuid:8e1f3a52-0000-4000-8000-000000000201`, {
          resourceType: 'AllergyIntolerance',
          clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', code: 'active' }] },
          verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-verification', code: 'confirmed' }] },
          code: { coding: [{ system: 'http://snomed.info/sct', code: '91936005', display: 'Allergy to penicillin' }] },
          patient: { reference: url },
        }),
      );
    }
  });
  return { resourceType: 'Bundle', type: 'transaction', entry: entries };
}
