/**
 * Operator commands (npm run tenant, npm run keys:rotate) leave admin-action AuditEvents like the
 * admin API does: a short-lived audit trail on the command's database, sealed before it exits.
 */
import os from 'node:os';
import type { Knex } from 'knex';
import { emitAuthEvent } from '../auth/events';
import { auditSignIns } from './sign-in';
import { AuditTrail } from './trail';

export interface CliAudit {
  /** One admin action of the command, in the tenant's audit trail. */
  action(tenant: string, reason: string, outcome?: 'success' | 'failure'): void;
  /** Seals what was recorded; call before the process exits. */
  close(): Promise<void>;
}

export function cliAudit(db: Knex, command: string): CliAudit {
  const trail = new AuditTrail(db);
  const off = auditSignIns(trail);
  const operator = `cli:${os.userInfo().username}`;
  return {
    action: (tenant, reason, outcome = 'success') =>
      emitAuthEvent({ type: 'admin-action', tenant, outcome, userId: operator, ip: os.hostname(), reason: `${command}: ${reason}` }),
    close: async () => {
      await new Promise((r) => setImmediate(r)); // the listeners run on the next turn
      off();
      await trail.close();
    },
  };
}
