/** Sign-in and administration events of the authorization server (server/auth/events.ts) as AuditEvents. */
import { AuthEvent, onAuthEvent } from '../auth/events';
import { AuditAction, toAuditEvent } from './event';
import type { AuditTrail } from './trail';

const ACTION: Record<AuthEvent['type'], AuditAction> = {
  'login-success': 'E',
  'login-failure': 'E',
  lockout: 'E',
  'lockout-notice': 'E',
  'mfa-challenge': 'E',
  'mfa-failure': 'E',
  'code-sent': 'E',
  'token-issued': 'C',
  logout: 'E',
  'federation-success': 'E',
  'federation-failure': 'E',
  'admin-action': 'U',
};

/** Records every sign-in event in the tenant's audit trail; returns the unsubscribe function. */
export function auditSignIns(trail: AuditTrail): () => void {
  return onAuthEvent((e) => {
    trail.record(
      e.tenant,
      toAuditEvent({
        tenant: e.tenant,
        action: ACTION[e.type],
        subtype: e.type,
        kind: e.type === 'admin-action' ? 'admin' : 'login',
        status: e.outcome === 'success' ? 200 : 401,
        outcomeText: e.reason,
        who: { sub: e.userId, clientId: e.clientId, fhirUser: e.fhirUser, role: e.role },
        ip: e.ip,
        entities: [],
        patients: e.fhirUser?.startsWith('Patient/') ? [e.fhirUser.slice(8)] : [],
        recorded: e.at,
      }),
    );
  });
}
