import type { Communication } from 'fhir/r4';
import { defineResource } from './module';

export default defineResource<Communication>({ type: 'Communication' });
