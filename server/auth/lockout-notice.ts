/**
 * When an IP is locked out, the owners of the accounts it tried get an email ("Sign-in to {practice}
 * was locked after 5 failed attempts from {IP} at {time}; ..."), at most one per user per lockout
 * window, through the same mailer as the patients' sign-in codes. Each notice is an auth event
 * (→ AuditEvent) with the user id, never the address.
 */
import type { Knex } from 'knex';
import type { Config } from '../config';
import { inTenant } from '../db/tenant-tx';
import { logger } from '../log';
import type { AuthStore } from './adapter';
import { emitAuthEvent } from './events';
import { emailHash, failedEmailHashes, LOCKOUT } from './lockout';
import { sendMail } from '../mail/mailer';

const NOTICE = 'LockoutNotice';

export interface LockoutNoticeInput {
  config: Config;
  db: Knex;
  store: AuthStore;
  tenant: string;
  practice: string;
  ip: string;
  /** How many failures locked the IP (the tenant's limit). */
  failures?: number;
  at?: Date;
}

/** Sends the notices for a lockout that just happened; returns the ids of the users notified. */
export async function sendLockoutNotices(n: LockoutNoticeInput): Promise<string[]> {
  const hashes = await failedEmailHashes(n.db, n.tenant, n.ip);
  if (!hashes.size) return [];
  // Few lockouts, small practices: hashing the tenant's addresses here keeps auth_failures free
  // of addresses and of user ids.
  const users: Array<{ id: string; email: string; role: string }> = await inTenant(n.db, n.tenant, async (tx) =>
    (await tx.raw(`SELECT id, email, role FROM users WHERE tenant_id = ? AND NOT disabled`, [n.tenant])).rows,
  );
  const at = n.at ?? new Date();
  const when = `${at.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  const sent: string[] = [];
  for (const u of users) {
    if (!hashes.has(emailHash(u.email))) continue;
    if (await n.store.get(NOTICE, u.id)) continue; // one notice per user per window
    await n.store.put(NOTICE, u.id, { ip: n.ip, at: at.toISOString() }, LOCKOUT.windowMinutes * 60);
    await sendMail(n.config.smtpUrl, n.config.mailFrom, {
      tenant: n.tenant,
      to: u.email,
      subject: `Sign-in to ${n.practice} was locked`,
      text:
        `Sign-in to ${n.practice} was locked after ${n.failures ?? LOCKOUT.maxFailures} failed attempts from ${n.ip} at ${when}; ` +
        `if this was not you, contact your administrator.\n\n` +
        `Sign-in from that address is blocked for ${LOCKOUT.windowMinutes} minutes. You do not need to do anything if it was you.`,
    });
    emitAuthEvent({ type: 'lockout-notice', tenant: n.tenant, outcome: 'success', userId: u.id, role: u.role, ip: n.ip, reason: 'lockout notice sent to the account owner' });
    sent.push(u.id);
  }
  return sent;
}

/** Fire and forget from a sign-in request: a mail problem must not change the sign-in answer. */
export function notifyLockout(n: LockoutNoticeInput): void {
  sendLockoutNotices(n).catch((err) => {
    // Only the error's name and code: a mail server's message may quote the recipient's address.
    const e = err as { name?: string; code?: string };
    logger.error({ tenant: n.tenant, err: { name: e?.name, code: e?.code } }, 'lockout notice failed');
    emitAuthEvent({ type: 'lockout-notice', tenant: n.tenant, outcome: 'failure', ip: n.ip, reason: 'lockout notice could not be sent' });
  });
}
