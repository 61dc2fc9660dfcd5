import type { Composition } from 'fhir/r4';
import { defineResource } from './module';

export default defineResource<Composition>({ type: 'Composition' });
