/**
 * The tenant's tamper-evident chain: link n = sha256(prev hash | n | AuditEvent id | stored JSON).
 * Changing, removing or reordering any sealed AuditEvent (or its link) breaks every later hash.
 */
import { createHash } from 'node:crypto';

export const GENESIS = '0'.repeat(64);

export function linkHash(prev: string, seq: number, resId: string, content: string): string {
  return createHash('sha256').update(`${prev}|${seq}|${resId}|`).update(content).digest('hex');
}
