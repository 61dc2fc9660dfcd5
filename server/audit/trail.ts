/**
 * The audit trail writer. Requests hand over their AuditEvents (record); they are queued in
 * Postgres in small batches (every ~100 ms) and then sealed per tenant under an advisory lock:
 * turned into AuditEvent resources in the same store (searchable like any resource) and linked
 * into the tenant's hash chain, in one transaction. Several processes may run it at once.
 */
import { randomUUID } from 'node:crypto';
import type { AuditEvent } from 'fhir/r4';
import type { Knex } from 'knex';
import { inTenant, type Tx } from '../db/tenant-tx';
import { logger } from '../log';
import { store } from '../store/resource-store';
import { GENESIS, linkHash } from './chain';

export interface AuditTrailOptions {
  /** How long events wait in memory before they are queued in the database. */
  flushMs?: number;
  /** Largest number of events sealed in one transaction. */
  sealBatch?: number;
  /** Sweep for events other (crashed) processes left unsealed, every this many ms. */
  sweepMs?: number;
}

export class AuditTrail {
  private buffer = new Map<string, AuditEvent[]>();
  private dirty = new Set<string>();
  private timer?: NodeJS.Timeout;
  private sweeper?: NodeJS.Timeout;
  private running?: Promise<void>;
  private closed = false;
  private closing = false;
  private retained = 0;
  private readonly flushMs: number;
  private readonly sealBatch: number;

  constructor(private db: Knex, opts: AuditTrailOptions = {}) {
    this.flushMs = opts.flushMs ?? 100;
    this.sealBatch = opts.sealBatch ?? 500;
    const sweepMs = opts.sweepMs ?? 60_000;
    this.sweeper = setInterval(() => void this.sweep().catch((e) => logger.error({ err: { message: e.message } }, 'audit sweep failed')), sweepMs);
    this.sweeper.unref();
  }

  record(tenant: string, event: AuditEvent): void {
    if (this.closed) {
      logger.error({ tenant }, 'audit event after close; dropped');
      return;
    }
    const list = this.buffer.get(tenant);
    if (list) list.push(event);
    else this.buffer.set(tenant, [event]);
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush().catch((e) => logger.error({ err: { message: e.message } }, 'audit flush failed'));
    }, this.flushMs);
    this.timer.unref();
  }

  /** Queues everything buffered and seals every tenant with queued events; resolves when done. */
  async flush(): Promise<void> {
    while (this.running) await this.running;
    this.running = this.doFlush().finally(() => (this.running = undefined));
    return this.running;
  }

  private async doFlush(): Promise<void> {
    const batches = [...this.buffer.entries()];
    this.buffer.clear();
    this.retained = 0;
    for (const [tenant, events] of batches) {
      try {
        // Sealed at once when this process gets the tenant's chain lock and nothing older waits in
        // the queue; otherwise queued for whoever holds the lock (and for the sweep).
        const ready = events.map(storable);
        if ((await sealDirect(this.db, tenant, ready)) === 'busy') {
          const texts = ready.map((e) => JSON.stringify(e));
          await inTenant(this.db, tenant, (tx) =>
            tx.raw(`INSERT INTO audit_queue (tenant_id, event) SELECT ?, e::json FROM unnest(?::text[]) WITH ORDINALITY AS u(e, n) ORDER BY n`, [tenant, texts]),
          );
          this.dirty.add(tenant);
        }
      } catch (e) {
        // Keep them for the next flush rather than lose them (the database may be briefly away),
        // but never let the buffer grow without bound.
        if (this.retained < 100_000) {
          this.retained += events.length;
          this.buffer.set(tenant, [...events, ...(this.buffer.get(tenant) ?? [])]);
        } else logger.error({ tenant, dropped: events.length }, 'audit queue unreachable too long; events dropped');
        throw e;
      }
    }
    for (const tenant of [...this.dirty]) {
      if ((await sealTenant(this.db, tenant, this.sealBatch)) !== 'busy') this.dirty.delete(tenant);
    }
    // What this process queued while another held the lock may have been queued after that
    // holder looked: try again shortly rather than wait for the sweep.
    if (this.dirty.size && !this.closing) this.schedule();
  }

  /** Seals what crashed processes left queued. */
  async sweep(): Promise<void> {
    const r = await this.db.raw(`SELECT audit_pending_tenants() AS t`);
    for (const row of r.rows as Array<{ t: string }>) this.dirty.add(row.t);
    await this.flush();
  }

  private closers: Array<() => void> = [];
  /** Runs `fn` when the trail closes (e.g. to unsubscribe an event source). */
  onClose(fn: () => void): void {
    this.closers.push(fn);
  }

  async close(): Promise<void> {
    for (const fn of this.closers.splice(0)) fn();
    this.closing = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.sweeper) clearInterval(this.sweeper);
    await this.flush();
    // Events this process queued are sealed before it stops, once the lock holder lets go.
    for (let i = 0; i < 250 && this.dirty.size; i++) {
      await new Promise((r) => setTimeout(r, 20));
      await this.flush();
    }
    this.closed = true;
  }
}

/**
 * NUL and lone surrogates (JSON.stringify writes them as \u escapes; a valid pair is never
 * escaped) cannot be stored in Postgres text; hostile input may carry them into a message.
 */
const UNSTORABLE = /\\u(?:0000|d[89a-f][0-9a-f]{2})/gi;
function storable(event: AuditEvent): AuditEvent {
  const text = JSON.stringify(event);
  UNSTORABLE.lastIndex = 0;
  if (!UNSTORABLE.test(text)) return event;
  return JSON.parse(text.replace(UNSTORABLE, '\\ufffd')) as AuditEvent;
}

/** The chain lock of a tenant's audit trail (transaction-scoped advisory lock). */
const LOCK = `SELECT pg_try_advisory_xact_lock(hashtext(?)) AS ok, EXISTS (SELECT 1 FROM audit_queue WHERE tenant_id = ?) AS queued`;

/**
 * Seals `events` without the queue, in one transaction: 'busy' (nothing written) when another
 * process holds the chain lock or older events wait in the queue (they must be sealed first).
 */
async function sealDirect(db: Knex, tenant: string, events: AuditEvent[]): Promise<number | 'busy'> {
  return inTenant(db, tenant, async (tx) => {
    const lock = await tx.raw(LOCK, [`audit:${tenant}`, tenant]);
    if (!lock.rows[0].ok || lock.rows[0].queued) return 'busy' as const;
    await appendToChain(tx, tenant, events);
    return events.length;
  });
}

/**
 * Seals the tenant's queued events in queue order: AuditEvent resources + chain links, one
 * transaction per batch, until the queue is empty. 'busy' when another process holds the lock.
 */
export async function sealTenant(db: Knex, tenant: string, batch = 500): Promise<number | 'busy'> {
  let total = 0;
  for (;;) {
    const n = await inTenant(db, tenant, async (tx) => {
      const lock = await tx.raw(LOCK, [`audit:${tenant}`, tenant]);
      if (!lock.rows[0].ok) return 'busy' as const;
      if (!lock.rows[0].queued) return 0;
      const queued = await tx.raw(`SELECT seq, event::text AS event FROM audit_queue WHERE tenant_id = ? ORDER BY seq LIMIT ?`, [tenant, batch]);
      const rows = queued.rows as Array<{ seq: string; event: string }>;
      if (!rows.length) return 0;
      await appendToChain(tx, tenant, rows.map((r) => JSON.parse(r.event) as AuditEvent));
      await tx.raw(`DELETE FROM audit_queue WHERE tenant_id = ? AND seq = ANY(?::bigint[])`, [tenant, rows.map((r) => r.seq)]);
      return rows.length;
    });
    if (n === 'busy') return total ? total : 'busy';
    total += n;
    if (n < batch) return total;
  }
}

/** Stores the events as AuditEvent resources and links them, in order, after the chain head. */
async function appendToChain(tx: Tx, tenant: string, events: AuditEvent[]): Promise<void> {
  const head = await tx.raw(`SELECT seq, hash FROM audit_chain WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1`, [tenant]);
  let seq = head.rows[0] ? Number(head.rows[0].seq) : 0;
  let prev: string = head.rows[0]?.hash ?? GENESIS;
  const items = events.map((resource) => ({ resource, id: randomUUID() }));
  let written;
  try {
    written = await tx.transaction((sp) => store.createMany(sp, items));
  } catch {
    // One event the store refuses must not hold up the chain: store each on its own, and
    // an unstorable one as a sanitised copy that says so.
    written = [];
    for (const item of items) {
      try {
        written.push(...(await tx.transaction((sp) => store.createMany(sp, [item]))));
      } catch (e) {
        logger.error({ tenant, err: { message: (e as Error).message } }, 'audit event stored sanitised');
        written.push(...(await store.createMany(tx, [{ ...item, resource: sanitised(item.resource) }])));
      }
    }
  }
  const links = written.map((w) => {
    seq += 1;
    const hash = linkHash(prev, seq, w.id, JSON.stringify(w.resource));
    const link = { seq, id: w.id, prev, hash };
    prev = hash;
    return link;
  });
  await tx.raw(
    `INSERT INTO audit_chain (tenant_id, seq, res_id, prev_hash, hash)
     SELECT ?, s, i, p, h FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[]) AS u(s, i, p, h)`,
    [tenant, links.map((l) => l.seq), links.map((l) => l.id), links.map((l) => l.prev), links.map((l) => l.hash)],
  );
}

/** The event with every string cut down to printable ASCII (kept: what, when, outcome; noted). */
function sanitised(event: AuditEvent): AuditEvent {
  const clean = (v: unknown): unknown => {
    if (typeof v === 'string') return v.replace(/[^\x20-\x7e]/g, '?');
    if (Array.isArray(v)) return v.map(clean);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, clean(x)]));
    return v;
  };
  const out = clean(event) as AuditEvent;
  out.outcomeDesc = `${out.outcomeDesc ? out.outcomeDesc + '; ' : ''}stored with non-printable characters replaced`;
  return out;
}
