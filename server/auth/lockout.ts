/**
 * Failed sign-ins per client IP: 5 (the tenant setting signInAttemptsPer15Minutes) within 15
 * minutes lock that IP out of the tenant's sign-in for the rest of the window.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { inTenant } from '../db/tenant-tx';

export const LOCKOUT = { maxFailures: 5, windowMinutes: 15 };

/** The tenant's limit (signInAttemptsPer15Minutes), or the default; 0 or less = no lockout. */
export function maxFailures(setting: number | undefined): number {
  return setting === undefined || !Number.isFinite(setting) ? LOCKOUT.maxFailures : setting > 0 ? Math.floor(setting) : Infinity;
}

export async function isLockedOut(db: Knex, tenant: string, ip: string, max = LOCKOUT.maxFailures): Promise<boolean> {
  return inTenant(db, tenant, async (tx) => {
    const r = await tx.raw(
      `SELECT count(*)::int AS n FROM auth_failures WHERE tenant_id = ? AND ip = ? AND at > now() - make_interval(mins => ?)`,
      [tenant, ip, LOCKOUT.windowMinutes],
    );
    return r.rows[0].n >= max;
  });
}

/** What auth_failures keeps of the email a failed attempt was for (never the address itself). */
export const emailHash = (email: string) => createHash('sha256').update(email.trim().toLowerCase()).digest('hex').slice(0, 16);

/** Records a failure; returns true when this failure locked the IP out. */
export async function recordFailure(db: Knex, tenant: string, ip: string, email?: string, max = LOCKOUT.maxFailures): Promise<boolean> {
  const hash = email ? emailHash(email) : null;
  return inTenant(db, tenant, async (tx) => {
    await tx.raw(`DELETE FROM auth_failures WHERE tenant_id = ? AND at < now() - interval '1 day'`, [tenant]);
    await tx.raw(`INSERT INTO auth_failures (tenant_id, ip, email_hash) VALUES (?, ?, ?)`, [tenant, ip, hash]);
    const r = await tx.raw(
      `SELECT count(*)::int AS n FROM auth_failures WHERE tenant_id = ? AND ip = ? AND at > now() - make_interval(mins => ?)`,
      [tenant, ip, LOCKOUT.windowMinutes],
    );
    return r.rows[0].n === max;
  });
}

/** The email hashes of the failures from `ip` in the current window (the accounts that were tried). */
export async function failedEmailHashes(db: Knex, tenant: string, ip: string): Promise<Set<string>> {
  return inTenant(db, tenant, async (tx) => {
    const r = await tx.raw(
      `SELECT DISTINCT email_hash FROM auth_failures WHERE tenant_id = ? AND ip = ? AND email_hash IS NOT NULL AND at > now() - make_interval(mins => ?)`,
      [tenant, ip, LOCKOUT.windowMinutes],
    );
    return new Set(r.rows.map((x: { email_hash: string }) => x.email_hash));
  });
}
