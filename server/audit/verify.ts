/** Walks a tenant's audit chain and reports the first link that does not verify. */
import type { Knex } from 'knex';
import { inTenant } from '../db/tenant-tx';
import { GENESIS, linkHash } from './chain';

export interface ChainBreak {
  seq: number;
  auditEvent: string;
  reason: string;
}

export interface ChainReport {
  tenant: string;
  links: number;
  /** Hash of the last link: write it down elsewhere to detect a rewritten chain later. */
  head: string;
  /** Events recorded but not sealed yet. */
  queued: number;
  /** AuditEvent resources that are not in the chain (inserted behind the server's back). */
  unchained: number;
  firstBreak?: ChainBreak;
}

export async function verifyChain(db: Knex, tenant: string, page = 2000): Promise<ChainReport> {
  return inTenant(db, tenant, async (tx) => {
    let expected = 1;
    let prev = GENESIS;
    let firstBreak: ChainBreak | undefined;
    for (;;) {
      const r = await tx.raw(
        `SELECT c.seq, c.res_id, c.prev_hash, c.hash, x.content::text AS content
           FROM audit_chain c
           LEFT JOIN resources x ON x.tenant_id = c.tenant_id AND x.res_type = 'AuditEvent' AND x.id = c.res_id
          WHERE c.tenant_id = ? AND c.seq >= ? ORDER BY c.seq LIMIT ?`,
        [tenant, expected, page],
      );
      const rows = r.rows as Array<{ seq: string; res_id: string; prev_hash: string; hash: string; content: string | null }>;
      for (const row of rows) {
        const seq = Number(row.seq);
        const at = `AuditEvent/${row.res_id}`;
        if (seq !== expected) firstBreak = { seq: expected, auditEvent: at, reason: `link ${expected} is missing (next is ${seq})` };
        else if (row.prev_hash !== prev) firstBreak = { seq, auditEvent: at, reason: 'the link does not continue the previous one (chain rewritten or reordered)' };
        else if (row.content === null) firstBreak = { seq, auditEvent: at, reason: 'the AuditEvent was removed' };
        else if (linkHash(prev, seq, row.res_id, row.content) !== row.hash) firstBreak = { seq, auditEvent: at, reason: 'the AuditEvent was changed after it was sealed' };
        if (firstBreak) break;
        prev = row.hash;
        expected = seq + 1;
      }
      if (firstBreak || rows.length < page) break;
    }
    const counts = await tx.raw(
      `SELECT (SELECT count(*) FROM audit_queue WHERE tenant_id = ?)::int AS queued,
              (SELECT count(*) FROM resources x WHERE x.tenant_id = ? AND x.res_type = 'AuditEvent'
                 AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.tenant_id = x.tenant_id AND c.res_id = x.id))::int AS unchained`,
      [tenant, tenant],
    );
    return {
      tenant,
      links: expected - 1,
      head: prev,
      queued: counts.rows[0].queued,
      unchained: counts.rows[0].unchained,
      ...(firstBreak ? { firstBreak } : {}),
    };
  });
}
