/**
 * Sign-in events for the audit trail. The AuditEvent writer (server/audit/, main branch) registers
 * with `onAuthEvent`; until then, and always, each event is logged with pino: ids, tenant, ip and
 * outcome, never names, emails or other PHI.
 */
import { logger } from '../log';

export type AuthEventType =
  | 'login-success'
  | 'login-failure'
  | 'lockout'
  | 'lockout-notice'
  | 'mfa-challenge'
  | 'mfa-failure'
  | 'token-issued'
  | 'logout'
  | 'code-sent'
  | 'federation-success'
  | 'federation-failure'
  /** an administrator's change: users, clients, identity provider, tenant, keys (reason says which) */
  | 'admin-action';

export interface AuthEvent {
  type: AuthEventType;
  tenant: string;
  outcome: 'success' | 'failure';
  /** user id (users.id) when known */
  userId?: string;
  role?: string;
  fhirUser?: string;
  clientId?: string;
  ip?: string;
  /** short reason for failures (never the submitted email or password) */
  reason?: string;
  at: string;
}

type Listener = (e: AuthEvent) => void | Promise<void>;
const listeners: Listener[] = [];

/** Registers a listener (e.g. the AuditEvent writer); returns a function that removes it. */
export function onAuthEvent(fn: Listener): () => void {
  listeners.push(fn);
  return () => {
    const i = listeners.indexOf(fn);
    if (i >= 0) listeners.splice(i, 1);
  };
}

export function emitAuthEvent(e: Omit<AuthEvent, 'at'>): void {
  const event: AuthEvent = { ...e, at: new Date().toISOString() };
  logger.info({ auth: { type: event.type, tenant: event.tenant, outcome: event.outcome, userId: event.userId, role: event.role, clientId: event.clientId, ip: event.ip, reason: event.reason } }, 'auth event');
  for (const l of listeners) {
    Promise.resolve()
      .then(() => l(event))
      .catch((err) => logger.error({ err: { message: (err as Error).message } }, 'auth event listener failed'));
  }
}
