import type { DocumentReference } from 'fhir/r4';
import { defineResource } from './module';

export default defineResource<DocumentReference>({ type: 'DocumentReference' });
