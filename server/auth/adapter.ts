/**
 * oidc-provider's storage in PostgreSQL: one row per artefact (Session, Grant, AuthorizationCode,
 * RefreshToken, Client, Interaction, ...) in `oidc_store`, tenant-scoped under row-level security.
 * Our own short-lived records (launch contexts, sign-in challenges) use the same table through
 * `AuthStore`.
 */
import type { Knex } from 'knex';
import { inTenant } from '../db/tenant-tx';

type Payload = Record<string, any>;

export class AuthStore {
  constructor(private db: Knex, readonly tenant: string) {}

  private writes = 0;

  async put(model: string, id: string, payload: Payload, expiresInSeconds?: number): Promise<void> {
    const expires = expiresInSeconds ? new Date(Date.now() + expiresInSeconds * 1000) : null;
    // Expired artefacts are dead weight: every 200th write of a process sweeps the tenant's.
    if (++this.writes % 200 === 0) {
      await inTenant(this.db, this.tenant, (tx) => tx.raw(`DELETE FROM oidc_store WHERE tenant_id = ? AND expires_at < now() - interval '1 hour'`, [this.tenant]));
    }
    await inTenant(this.db, this.tenant, (tx) =>
      tx.raw(
        `INSERT INTO oidc_store (tenant_id, model, id, payload, grant_id, uid, expires_at)
         VALUES (?, ?, ?, ?::jsonb, ?, ?, ?)
         ON CONFLICT (tenant_id, model, id) DO UPDATE SET payload = EXCLUDED.payload, grant_id = EXCLUDED.grant_id,
           uid = EXCLUDED.uid, expires_at = EXCLUDED.expires_at`,
        [this.tenant, model, id, JSON.stringify(payload), payload.grantId ?? null, payload.uid ?? null, expires],
      ),
    );
  }

  /** The live (unexpired) artefact of `model` whose `column` (a fixed SQL expression) equals `value`. */
  private async findBy(model: string, column: 'id' | 'uid' | "payload->>'userCode'", value: string): Promise<Payload | undefined> {
    return inTenant(this.db, this.tenant, async (tx) => {
      const r = await tx.raw(
        `SELECT payload, consumed_at FROM oidc_store WHERE tenant_id = ? AND model = ? AND ${column} = ? AND (expires_at IS NULL OR expires_at > now())`,
        [this.tenant, model, value],
      );
      return r.rows[0] ? withConsumed(r.rows[0]) : undefined;
    });
  }

  get(model: string, id: string): Promise<Payload | undefined> {
    return this.findBy(model, 'id', id);
  }

  byUid(model: string, uid: string): Promise<Payload | undefined> {
    return this.findBy(model, 'uid', uid);
  }

  byUserCode(model: string, code: string): Promise<Payload | undefined> {
    return this.findBy(model, "payload->>'userCode'", code);
  }

  async consume(model: string, id: string): Promise<void> {
    await inTenant(this.db, this.tenant, (tx) =>
      tx.raw(`UPDATE oidc_store SET consumed_at = now() WHERE tenant_id = ? AND model = ? AND id = ?`, [this.tenant, model, id]),
    );
  }

  /** Atomically marks a record used; false when it was missing, expired or already used. */
  async take(model: string, id: string): Promise<Payload | undefined> {
    return inTenant(this.db, this.tenant, async (tx) => {
      const r = await tx.raw(
        `UPDATE oidc_store SET consumed_at = now() WHERE tenant_id = ? AND model = ? AND id = ? AND consumed_at IS NULL
           AND (expires_at IS NULL OR expires_at > now()) RETURNING payload`,
        [this.tenant, model, id],
      );
      return r.rows[0]?.payload;
    });
  }

  async destroy(model: string, id: string): Promise<void> {
    await inTenant(this.db, this.tenant, (tx) => tx.raw(`DELETE FROM oidc_store WHERE tenant_id = ? AND model = ? AND id = ?`, [this.tenant, model, id]));
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    await inTenant(this.db, this.tenant, (tx) => tx.raw(`DELETE FROM oidc_store WHERE tenant_id = ? AND grant_id = ?`, [this.tenant, grantId]));
  }

  async list(model: string): Promise<Array<{ id: string; payload: Payload }>> {
    return inTenant(this.db, this.tenant, async (tx) =>
      (await tx.raw(`SELECT id, payload FROM oidc_store WHERE tenant_id = ? AND model = ? ORDER BY id`, [this.tenant, model])).rows,
    );
  }
}

function withConsumed(row: { payload: Payload; consumed_at: Date | null }): Payload {
  const p = typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload;
  return row.consumed_at ? { ...p, consumed: Math.floor(new Date(row.consumed_at).getTime() / 1000) } : p;
}

/** An oidc-provider adapter class bound to one tenant. */
export function adapterFor(store: AuthStore) {
  return class PgAdapter {
    constructor(private name: string) {}
    upsert(id: string, payload: Payload, expiresIn?: number) {
      return store.put(this.name, id, payload, expiresIn);
    }
    find(id: string) {
      return store.get(this.name, id);
    }
    findByUid(uid: string) {
      return store.byUid(this.name, uid);
    }
    findByUserCode(code: string) {
      return store.byUserCode(this.name, code);
    }
    consume(id: string) {
      return store.consume(this.name, id);
    }
    destroy(id: string) {
      return store.destroy(this.name, id);
    }
    revokeByGrantId(grantId: string) {
      return store.revokeByGrantId(grantId);
    }
  };
}
