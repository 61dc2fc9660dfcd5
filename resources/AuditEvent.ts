import type { AuditEvent } from 'fhir/r4';
import { defineResource } from './module';

/**
 * The audit trail is written by the server only (server/audit/) and is append-only: no client,
 * whatever its role or scopes, creates, changes or deletes an AuditEvent through the API.
 */
export default defineResource<AuditEvent>({ type: 'AuditEvent', forbid: ['create', 'update', 'patch', 'delete'] });
