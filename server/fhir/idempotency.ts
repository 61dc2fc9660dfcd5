/**
 * Idempotency-Key on POST: the first response (status, headers, body) is stored in the same
 * transaction as the write; a retry with the same key and body replays it, a different body is 422.
 */
import { createHash } from 'node:crypto';
import { inTenant } from '../db/tenant-tx';
import { FhirError } from './errors';
import type { FhirResponse, TenantContext } from './types';

const REPLAYED_HEADERS = ['ETag', 'Last-Modified', 'Location', 'Content-Location'];

export function requestHash(method: string, path: string, body: Buffer | undefined): string {
  return createHash('sha256').update(method).update('\n').update(path).update('\n').update(body ?? '').digest('hex');
}

export async function withIdempotency(
  ctx: TenantContext,
  key: string,
  hash: string,
  exec: (ctx: TenantContext) => Promise<FhirResponse>,
): Promise<FhirResponse> {
  if (key.length > 255) throw FhirError.of(400, 'invalid', 'Idempotency-Key must be at most 255 characters');
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await inTenant(ctx.db, ctx.tenant, async (tx) => {
        const hit = await tx.raw(
          `SELECT request_hash, status, headers, body FROM idempotency_keys
            WHERE tenant_id = ? AND key = ? AND expires_at > now()`,
          [ctx.tenant, key],
        );
        const row = hit.rows[0] as { request_hash: string; status: number; headers: Record<string, string>; body: string | null } | undefined;
        if (row) {
          if (row.request_hash !== hash) {
            throw FhirError.of(422, 'business-rule', 'This Idempotency-Key was already used with a different request body');
          }
          const headers = typeof row.headers === 'string' ? JSON.parse(row.headers) : row.headers;
          return { status: row.status, headers: { ...headers, 'Idempotency-Replayed': 'true' }, json: row.body ?? undefined };
        }
        const res = await exec({ ...ctx, tx });
        const headers: Record<string, string> = {};
        for (const h of REPLAYED_HEADERS) if (res.headers[h]) headers[h] = res.headers[h];
        const body = res.json ?? (res.body !== undefined ? JSON.stringify(res.body) : null);
        const saved = await tx.raw(
          `INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, headers, body, expires_at)
           VALUES (?, ?, ?, ?, ?::jsonb, ?, now() + (? * interval '1 second'))
           ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, status = EXCLUDED.status,
             headers = EXCLUDED.headers, body = EXCLUDED.body, expires_at = EXCLUDED.expires_at
           WHERE idempotency_keys.expires_at <= now()
           RETURNING 1 AS ok`,
          [ctx.tenant, key, hash, res.status, JSON.stringify(headers), body, ctx.config.idempotencyTtlSeconds],
        );
        // Nothing written: a concurrent request with this key won. Roll back and replay its answer.
        if (!saved.rows.length) throw Object.assign(new Error('idempotency race'), { code: '23505' });
        return res;
      });
    } catch (e) {
      // A concurrent request with the same key committed first: replay its answer.
      if ((e as { code?: string }).code === '23505') continue;
      throw e;
    }
  }
  throw FhirError.of(409, 'conflict', 'Another request with this Idempotency-Key is in progress; retry shortly');
}
