import type { MedicationStatement } from 'fhir/r4';
import { defineResource } from './module';

export default defineResource<MedicationStatement>({ type: 'MedicationStatement' });
