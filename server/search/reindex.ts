/**
 * Rebuilds the search index rows of stored resources (after a change to the indexer or the
 * registry, or to repair damaged index rows): tenant by tenant, in batches keyset-paged by
 * (res_type, id). Each batch is one tenant transaction that locks its resource rows FOR UPDATE,
 * so a concurrent write of one of them waits for the batch (and then writes its own index rows)
 * instead of interleaving with it. Used by `npm run reindex` (server/cli/reindex.ts).
 */
import type { FhirResource as Resource } from 'fhir/r4';
import { registry } from '../../resources';
import type { Database } from '../db/connection';
import { inTenant } from '../db/tenant-tx';
import { bulkIndexSql, extractIndexRows } from './indexer';
import { blindIndexOf, openRows } from '../crypto/at-rest';
import { mayHoldSecrets } from '../crypto/policy';

export interface ReindexProgress {
  tenant: string;
  /** Resources of this tenant done so far, of `total`. */
  done: number;
  total: number;
  /** Resources per second in this tenant so far. */
  perSecond: number;
}

export interface ReindexOptions {
  /** Only this tenant (default: every tenant). */
  tenant?: string;
  /** Only this resource type. */
  type?: string;
  /** Resources per transaction (default 500). */
  batchSize?: number;
  /** The server's public URL (PUBLIC_URL): absolute references to `{publicUrl}/fhir/{tenant}` index like relative ones, as on write. */
  publicUrl?: string;
  onProgress?: (p: ReindexProgress) => void;
}

export interface ReindexSummary {
  tenants: Array<{ tenant: string; resources: number; seconds: number }>;
  resources: number;
  seconds: number;
  perSecond: number;
}

/** Every tenant. RLS hides other tenants from fhir_app, so this needs the owner connection. */
export async function listTenants(db: Database): Promise<string[]> {
  if (db.engine === 'pglite') {
    // One session for everything: leave the application role just for this query.
    await db.owner.raw('RESET ROLE');
    try {
      return (await db.owner.raw(`SELECT tenant_id FROM tenants ORDER BY tenant_id`)).rows.map((r: { tenant_id: string }) => r.tenant_id);
    } finally {
      await db.owner.raw('SET ROLE fhir_app');
    }
  }
  const who = (await db.owner.raw(`SELECT rolsuper OR rolbypassrls AS ok FROM pg_roles WHERE rolname = current_user`)).rows[0];
  if (!who?.ok) {
    throw new Error('Listing tenants needs a connection that bypasses row-level security (superuser or BYPASSRLS); name the tenant with --tenant instead');
  }
  return (await db.owner.raw(`SELECT tenant_id FROM tenants ORDER BY tenant_id`)).rows.map((r: { tenant_id: string }) => r.tenant_id);
}

const RETRYABLE = new Set(['40001', '40P01']); // serialization failure, deadlock (e.g. with a transaction Bundle)

async function withRetry<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= attempts || !RETRYABLE.has((e as { code?: string }).code ?? '')) throw e;
      await new Promise((r) => setTimeout(r, 50 * i));
    }
  }
}

export async function reindex(db: Database, opts: ReindexOptions = {}): Promise<ReindexSummary> {
  const batchSize = opts.batchSize ?? 500;
  if (!(batchSize >= 1)) throw new Error('batchSize must be at least 1');
  if (opts.type && !registry.has(opts.type)) throw new Error(`Unknown resource type "${opts.type}"`);
  let tenants: string[];
  if (opts.tenant) {
    const known = await inTenant(db.app, opts.tenant, async (tx) => (await tx.raw(`SELECT 1 FROM tenants WHERE tenant_id = ?`, [opts.tenant])).rows.length > 0);
    if (!known) throw new Error(`Unknown tenant "${opts.tenant}"`);
    tenants = [opts.tenant];
  } else {
    tenants = await listTenants(db);
  }
  const typeCond = opts.type ? ` AND res_type = ?` : '';
  const typeBind = opts.type ? [opts.type] : [];
  const started = Date.now();
  const summary: ReindexSummary = { tenants: [], resources: 0, seconds: 0, perSecond: 0 };

  for (const tenant of tenants) {
    const t0 = Date.now();
    const baseUrl = opts.publicUrl ? `${opts.publicUrl.replace(/\/+$/, '')}/fhir/${tenant}` : undefined;
    const total = await inTenant(db.app, tenant, async (tx) =>
      Number((await tx.raw(`SELECT count(*)::int AS n FROM resources WHERE tenant_id = ?${typeCond}`, [tenant, ...typeBind])).rows[0].n),
    );
    let done = 0;
    let after: [string, string] | undefined;
    opts.onProgress?.({ tenant, done, total, perSecond: 0 });
    for (;;) {
      const keyCond = after ? ` AND (res_type, id) > (?, ?)` : '';
      const batch = await withRetry(() =>
        inTenant(db.app, tenant, async (tx) => {
          const rows = (
            await tx.raw(
              `SELECT res_type, id, deleted, content::text AS json FROM resources
                WHERE tenant_id = ?${typeCond}${keyCond}
                ORDER BY res_type, id LIMIT ? FOR UPDATE`,
              [tenant, ...typeBind, ...(after ?? []), batchSize],
            )
          ).rows as Array<{ res_type: string; id: string; deleted: boolean; json: string | null }>;
          if (rows.length) {
            await openRows(tx, rows, (r) => r.res_type, (r) => r.id);
            const blind = rows.some((r) => r.json && mayHoldSecrets(r.res_type, r.json)) ? await blindIndexOf(tx) : undefined;
            const entries = rows.map((r) => ({
              type: r.res_type,
              id: r.id,
              // a deleted resource has no index rows: only delete
              rows: r.deleted || !r.json ? null : extractIndexRows(JSON.parse(r.json) as Resource, { baseUrl, blind }),
            }));
            const { sql, bindings } = bulkIndexSql(tenant, entries);
            await tx.raw(sql, bindings);
          }
          return rows;
        }),
      );
      if (!batch.length) break;
      done += batch.length;
      const last = batch[batch.length - 1];
      after = [last.res_type, last.id];
      const secs = (Date.now() - t0) / 1000;
      opts.onProgress?.({ tenant, done, total: Math.max(total, done), perSecond: secs > 0 ? done / secs : done });
      if (batch.length < batchSize) break;
    }
    summary.tenants.push({ tenant, resources: done, seconds: (Date.now() - t0) / 1000 });
    summary.resources += done;
  }
  summary.seconds = (Date.now() - started) / 1000;
  summary.perSecond = summary.seconds > 0 ? summary.resources / summary.seconds : summary.resources;
  return summary;
}
