/** _history at instance, type and system level: newest first, keyset-paged on the history sequence. */
import type { Tx } from '../db/tenant-tx';
import { badRequest } from '../fhir/errors';
import { parseFhirDate } from '../search/fhir-date';
import { openRows } from '../crypto/at-rest';

export interface HistoryEntry {
  seq: number;
  type: string;
  id: string;
  version: number;
  lastUpdated: Date;
  deleted: boolean;
  method: string;
  json: string | null;
}

export interface HistoryQuery {
  type?: string;
  id?: string;
  since?: string;
  at?: string;
  count: number;
  /** Opaque cursor: only entries older than this sequence number. */
  before?: string;
}

export async function history(tx: Tx, q: HistoryQuery): Promise<{ entries: HistoryEntry[]; next?: string; total?: number }> {
  const where = ['tenant_id = ?'];
  const bindings: any[] = [tx.tenant];
  if (q.type) {
    where.push('res_type = ?');
    bindings.push(q.type);
  }
  if (q.id) {
    where.push('id = ?');
    bindings.push(q.id);
  }
  if (q.since !== undefined) {
    const r = parseFhirDate(q.since);
    if (!r || !/T/.test(q.since)) throw badRequest(`_since must be an instant (e.g. 2024-01-01T00:00:00Z), not "${q.since}"`, ['_since']);
    where.push('last_updated >= ?');
    bindings.push(r.lo);
  }
  if (q.at !== undefined) {
    const r = parseFhirDate(q.at);
    if (!r) throw badRequest(`_at must be a date or dateTime, not "${q.at}"`, ['_at']);
    where.push('last_updated < ?');
    bindings.push(r.hi);
  }
  const countWhere = [...where];
  const countBindings = [...bindings];
  if (q.before !== undefined) {
    if (!/^\d+$/.test(q.before)) throw badRequest('Invalid history cursor: use the next link as returned');
    where.push('seq < ?');
    bindings.push(Number(q.before));
  }
  const rows = await tx.raw(
    `SELECT seq, res_type, id, version, last_updated, deleted, method, content::text AS json
       FROM resource_history WHERE ${where.join(' AND ')} ORDER BY seq DESC LIMIT ?`,
    [...bindings, q.count + 1],
  );
  const list = (rows.rows as Array<Record<string, unknown>>).map((r) => ({
    seq: Number(r.seq),
    type: r.res_type as string,
    id: r.id as string,
    version: r.version as number,
    lastUpdated: r.last_updated instanceof Date ? r.last_updated : new Date(r.last_updated as string),
    deleted: r.deleted as boolean,
    method: r.method as string,
    json: r.json as string | null,
  }));
  const entries = await openRows(tx, list.slice(0, q.count), (e) => e.type, (e) => e.id);
  const next = list.length > q.count ? String(entries[entries.length - 1].seq) : undefined;
  let total: number | undefined;
  if (q.id || q.before === undefined) {
    const c = await tx.raw(`SELECT count(*)::int AS n FROM resource_history WHERE ${countWhere.join(' AND ')}`, countBindings);
    total = Number(c.rows[0].n);
  }
  return { entries, next, total };
}
