/**
 * With REDIS_URL: the relay moves outbox rows to a BullMQ queue, and this process's BullMQ worker
 * runs them with the same handlers (executeLocked) as the in-process runner.
 *
 *  - A pass claims the pending rows due within `aheadMs` (FOR UPDATE SKIP LOCKED), adds them to
 *    BullMQ (delayed until their run time) and marks them relayed, in one transaction: if Redis
 *    is down the add fails, the transaction rolls back and the rows stay pending for the next
 *    pass. A crash after the add and before the commit leaves them pending too: the next pass
 *    adds them again with the same BullMQ job id (`<outbox id>-<attempt>`), which BullMQ ignores
 *    while it still holds that job, and which the worker skips once the row is done.
 *  - Rows relayed more than `replayAfterMs` past their run time and still not finished (Redis
 *    lost them: a restart without persistence, a flush) are added again.
 *  - The worker locks the row, checks it is still pending/relayed at the same attempt (a
 *    retracted, done or rescheduled row is skipped), runs the handler and marks the row done in
 *    one transaction. Handler errors do not fail the BullMQ job: the row goes back to pending
 *    with its backoff, and the relay hands the next attempt over under a new job id.
 */
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';
import { inTenant } from '../db/tenant-tx';
import { logger } from '../log';
import { ExecuteOutcome, executeLocked, JOB_COLUMNS, JobRow } from './outbox';
import { dueTenants, executeOptions, Jobs, JobsDeps, JobsOptions, jobTenant, PassLock, Purger } from './runner';

export interface QueueRelayOptions extends JobsOptions {
  redisUrl: string;
  /** BullMQ key prefix (JOB_QUEUE_PREFIX, default `fhir`); tests use their own. */
  prefix?: string;
  /** Relay jobs due within this many ms as delayed BullMQ jobs (default 10 minutes). */
  aheadMs?: number;
  /** Re-add relayed jobs this long past their run time and not finished (default 5 minutes). */
  replayAfterMs?: number;
  /** Run a BullMQ worker in this process (default true). */
  worker?: boolean;
  /** Worker concurrency (default 4). */
  concurrency?: number;
  /** Test hook: called after the jobs were added to BullMQ and before they are marked relayed. */
  beforeMarkRelayed?: (ids: string[]) => void | Promise<void>;
}

export const QUEUE_NAME = 'fhir-jobs';

interface QueuedJob {
  tenant: string;
  id: string;
  attempt: number;
}

export class QueueRelay implements Jobs {
  readonly mode = 'bullmq' as const;
  private _queue?: Queue;
  private worker?: Worker;
  private producer?: IORedis;
  private consumer?: IORedis;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private lock = new PassLock();
  private lastError = 0;
  private purger: Purger;

  constructor(
    private deps: JobsDeps,
    private opts: QueueRelayOptions,
  ) {
    this.purger = new Purger(deps, opts);
  }

  /** The BullMQ queue (connected on first use). */
  get queue(): Queue {
    if (!this._queue) {
      // The producer fails fast while Redis is away (the rows stay pending); the worker's
      // connection waits and reconnects, as BullMQ requires.
      this.producer = new IORedis(this.opts.redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
      this.producer.on('error', (e) => this.warn('redis (relay)', e));
      this._queue = new Queue(QUEUE_NAME, { connection: this.producer, prefix: this.opts.prefix ?? 'fhir' });
      this._queue.on('error', (e) => this.warn('queue', e));
    }
    return this._queue;
  }

  private warn(what: string, e: Error): void {
    // Once per 10 s at most: an outage must not flood the log.
    if (Date.now() - this.lastError < 10_000) return;
    this.lastError = Date.now();
    logger.warn({ err: { message: e.message } }, `${what}: ${e.message}`);
  }

  start(): void {
    if (this.closed) return;
    if (this.opts.worker !== false && !this.worker) this.startWorker();
    if (!this.timer) {
      this.timer = setInterval(() => {
        if (this.lock.busy) return;
        void this.runDue().catch((e) => this.warn('job relay pass failed', e));
      }, this.opts.pollMs ?? 1000);
      this.timer.unref();
    }
  }

  /** Starts this process's BullMQ worker (start() does it too). */
  startWorker(): void {
    if (this.worker || this.closed) return;
    this.consumer = new IORedis(this.opts.redisUrl, { maxRetriesPerRequest: null });
    this.consumer.on('error', (e) => this.warn('redis (worker)', e));
    this.worker = new Worker<QueuedJob>(QUEUE_NAME, (job) => this.process(job.data), {
      connection: this.consumer,
      prefix: this.opts.prefix ?? 'fhir',
      concurrency: this.opts.concurrency ?? 4,
    });
    this.worker.on('error', (e) => this.warn('job worker', e));
    this.worker.on('failed', (job, e) => logger.warn({ tenant: job?.data.tenant, job: job?.data.id, err: { message: e.message } }, 'queued job failed in the worker'));
  }

  /** The BullMQ processor: runs one relayed job if it is still due at that attempt. */
  async process(data: QueuedJob): Promise<ExecuteOutcome | 'stale'> {
    const exec = executeOptions(this.deps, this.opts, await jobTenant(this.deps, data.tenant));
    return inTenant(this.deps.db, data.tenant, async (tx) => {
      const r = await tx.raw(`SELECT ${JOB_COLUMNS} FROM jobs WHERE tenant_id = ? AND id = ? FOR UPDATE`, [data.tenant, data.id]);
      const row = r.rows[0] as JobRow | undefined;
      if (!row || row.attempts !== data.attempt) return 'stale';
      return executeLocked(tx, row, exec);
    });
  }

  runDue(): Promise<number> {
    return this.lock.run(() => this.pass());
  }

  private async pass(): Promise<number> {
    if (this.closed) return 0;
    const now = this.deps.clock.now();
    const horizon = new Date(now.getTime() + (this.opts.aheadMs ?? 600_000));
    const stale = new Date(now.getTime() - (this.opts.replayAfterMs ?? 300_000));
    let n = 0;
    for (const tenant of await dueTenants(this.deps.db, horizon, stale, this.opts.onlyTenants)) {
      for (let i = 0; i < 100 && !this.closed; i++) {
        const moved = await inTenant(this.deps.db, tenant, async (tx) => {
          const r = await tx.raw(
            `SELECT ${JOB_COLUMNS} FROM jobs WHERE tenant_id = ?
                AND ((state = 'pending' AND run_at <= ?) OR (state = 'relayed' AND run_at < ? AND relayed_at < ?))
              ORDER BY run_at LIMIT 200 FOR UPDATE SKIP LOCKED`,
            [tenant, horizon, stale, stale],
          );
          const rows = r.rows as JobRow[];
          if (!rows.length) return 0;
          await withTimeout(
            this.queue.addBulk(
              rows.map((row) => ({
                name: row.kind,
                data: { tenant, id: row.id, attempt: row.attempts } satisfies QueuedJob,
                opts: {
                  jobId: `${row.id}-${row.attempts}`,
                  delay: Math.max(0, new Date(row.run_at).getTime() - now.getTime()),
                  attempts: 5,
                  backoff: { type: 'exponential', delay: 5_000 },
                  // The outbox row is the record. A finished BullMQ job is removed, so that a replay
                  // of a row BullMQ gave up on (infrastructure errors only) adds it anew.
                  removeOnComplete: true,
                  removeOnFail: true,
                },
              })),
            ),
            5_000,
            'adding jobs to the queue',
          );
          await this.opts.beforeMarkRelayed?.(rows.map((x) => x.id));
          await tx.raw(`UPDATE jobs SET state = 'relayed', relayed_at = ? WHERE tenant_id = ? AND id = ANY(?::uuid[])`, [now, tenant, rows.map((x) => x.id)]);
          return rows.length;
        });
        n += moved;
        if (moved < 200) break;
      }
      await this.purger.maybe(tenant);
    }
    return n;
  }

  /**
   * Relays what is due, then waits until the worker has finished every job of the relayed
   * tenants that is due by the clock (tests: onlyTenants; otherwise every tenant).
   */
  async drain(timeoutMs = 20_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      await this.runDue();
      const now = this.deps.clock.now();
      let open = 0;
      for (const tenant of await dueTenants(this.deps.db, now, now, this.opts.onlyTenants)) {
        open += await inTenant(this.deps.db, tenant, async (tx) => {
          const r = await tx.raw(`SELECT count(*)::int AS n FROM jobs WHERE tenant_id = ? AND state IN ('pending', 'relayed') AND run_at <= ?`, [tenant, now]);
          return r.rows[0].n as number;
        });
      }
      if (!open) return;
      if (Date.now() > until) throw new Error(`drain: ${open} job(s) still open after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.lock.idle();
    await this.worker?.close().catch(() => undefined);
    await this._queue?.close().catch(() => undefined);
    this.producer?.disconnect();
    this.consumer?.disconnect();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`timeout ${what}`)), ms);
    }),
  ]);
}
