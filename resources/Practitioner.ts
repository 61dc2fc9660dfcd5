import type { Practitioner } from 'fhir/r4';
import { defineResource } from './module';

export default defineResource<Practitioner>({ type: 'Practitioner' });
