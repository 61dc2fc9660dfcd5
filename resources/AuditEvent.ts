import type { AuditEvent } from 'fhir/r4';
import { defineResource } from './module';

export default defineResource<AuditEvent>({ type: 'AuditEvent' });
