/**
 * The two ways jobs leave the outbox, behind one interface (Jobs):
 *  - InProcessRunner (no REDIS_URL): polls the outbox and runs due jobs itself, one transaction
 *    per job, rows claimed with FOR UPDATE SKIP LOCKED (several processes may run it);
 *  - QueueRelay (REDIS_URL, server/jobs/queue-relay.ts): moves due jobs to BullMQ, whose workers
 *    run the same handlers through executeLocked.
 */
import type { Knex } from 'knex';
import type { Config } from '../config';
import { inTenant } from '../db/tenant-tx';
import type { TenantDirectory } from '../http/tenants';
import { logger } from '../log';
import type { Mailer } from '../mail/mailer';
import { Clock, executeLocked, ExecuteOptions, ExecuteOutcome, JOB_COLUMNS, JobRow, JobTenant, purgeFinishedJobs } from './outbox';

export interface JobsDeps {
  config: Config;
  db: Knex;
  tenants: TenantDirectory;
  mail: Mailer;
  clock: Clock;
}

export interface JobsOptions {
  /** How often the outbox is polled, ms (default 1000). */
  pollMs?: number;
  /** Attempts before a job is failed for good (default 8). */
  maxAttempts?: number;
  /** Delay before retry n, ms (default 30 s × 2^(n-1), at most 1 hour). */
  backoffMs?: (attempt: number) => number;
  /** Only these tenants (tests; default every tenant with due jobs). */
  onlyTenants?: string[];
  /** Finished (done, retracted) jobs are deleted this many days after they finished (default 180; 0 = never). */
  keepFinishedDays?: number;
}

export interface Jobs {
  readonly mode: 'in-process' | 'bullmq';
  /** Starts polling (createApp does this unless JOB_RUNNER=off). */
  start(): void;
  /** One pass: runs (or relays) every job due now by the clock; resolves with how many it handled. */
  runDue(): Promise<number>;
  /** Runs passes until nothing is due (BullMQ: until the workers have finished what was relayed). */
  drain(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** A relayed row this long past its run time and not finished is run by the in-process runner. */
const STRANDED_MS = 15 * 60_000;

export const defaultBackoff = (attempt: number) => Math.min(3_600_000, 30_000 * 2 ** (attempt - 1));

/** Tenants with jobs due by `horizon` (pending) or relayed before `stale` and not finished. */
export async function dueTenants(db: Knex, horizon: Date, stale: Date | null, only?: string[]): Promise<string[]> {
  if (only) return only;
  const r = await db.raw(`SELECT jobs_due_tenants(?::timestamptz, ?::timestamptz) AS t`, [horizon.toISOString(), (stale ?? new Date(0)).toISOString()]);
  return (r.rows as Array<{ t: string }>).map((x) => x.t);
}

export async function jobTenant(deps: JobsDeps, tenant: string): Promise<JobTenant> {
  const t = await deps.tenants.get(tenant);
  return { id: tenant, name: t?.name ?? tenant, settings: t?.settings ?? {}, baseUrl: `${deps.config.publicUrl}/fhir/${tenant}` };
}

export function executeOptions(deps: JobsDeps, opts: JobsOptions, tenant: JobTenant): ExecuteOptions {
  return {
    config: deps.config,
    db: deps.db,
    clock: deps.clock,
    mail: deps.mail,
    tenant,
    maxAttempts: opts.maxAttempts ?? 8,
    backoffMs: opts.backoffMs ?? defaultBackoff,
  };
}

/**
 * Deletes old finished jobs of a tenant, at most once an hour per tenant and process (called by
 * the passes for the tenants they serve).
 */
export class Purger {
  private last = new Map<string, number>();
  constructor(
    private deps: JobsDeps,
    private opts: JobsOptions,
  ) {}
  async maybe(tenant: string): Promise<void> {
    const days = this.opts.keepFinishedDays ?? 180;
    const now = this.deps.clock.now().getTime();
    if (!days || now - (this.last.get(tenant) ?? 0) < 3_600_000) return;
    this.last.set(tenant, now);
    const n = await inTenant(this.deps.db, tenant, (tx) => purgeFinishedJobs(tx, new Date(now - days * 86_400_000)));
    if (n) logger.info({ tenant, purged: n }, 'old finished jobs deleted');
  }
}

/** Serialises passes: a pass asked for while one runs waits for it and then runs. */
export class PassLock {
  private running?: Promise<unknown>;
  async run<T>(fn: () => Promise<T>): Promise<T> {
    while (this.running) await this.running.catch(() => undefined);
    const p = fn();
    this.running = p;
    try {
      return await p;
    } finally {
      this.running = undefined;
    }
  }
  get busy(): boolean {
    return !!this.running;
  }
  async idle(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined);
  }
}

export class InProcessRunner implements Jobs {
  readonly mode = 'in-process' as const;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private lock = new PassLock();
  private purger: Purger;

  constructor(
    private deps: JobsDeps,
    private opts: JobsOptions = {},
  ) {
    this.purger = new Purger(deps, opts);
  }

  start(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => {
      if (this.lock.busy) return; // a slow pass: skip this tick rather than queue passes up
      void this.runDue().catch((e) => logger.error({ err: { message: e.message } }, 'job runner pass failed'));
    }, this.opts.pollMs ?? 1000);
    this.timer.unref();
  }

  runDue(): Promise<number> {
    return this.lock.run(() => this.pass());
  }

  private async pass(): Promise<number> {
    if (this.closed) return 0;
    let n = 0;
    const now = this.deps.clock.now();
    // Rows relayed to a queue long ago and never finished (REDIS_URL was removed, or the queue
    // lost them) are run here too.
    const stale = new Date(now.getTime() - STRANDED_MS);
    for (const tenant of await dueTenants(this.deps.db, now, stale, this.opts.onlyTenants)) {
      const exec = executeOptions(this.deps, this.opts, await jobTenant(this.deps, tenant));
      // One job per transaction; a failed job gets a later run_at, so a pass always ends.
      for (let i = 0; i < 1000 && !this.closed; i++) {
        const outcome = await inTenant(this.deps.db, tenant, async (tx): Promise<ExecuteOutcome | undefined> => {
          const r = await tx.raw(
            `SELECT ${JOB_COLUMNS} FROM jobs WHERE tenant_id = ? AND run_at <= ?
                AND (state = 'pending' OR (state = 'relayed' AND run_at < ? AND relayed_at < ?))
              ORDER BY run_at LIMIT 1 FOR UPDATE SKIP LOCKED`,
            [tenant, this.deps.clock.now(), stale, stale],
          );
          const row = r.rows[0] as JobRow | undefined;
          return row ? executeLocked(tx, row, exec) : undefined;
        });
        if (!outcome) break;
        n++;
      }
      await this.purger.maybe(tenant);
    }
    return n;
  }

  async drain(): Promise<void> {
    while ((await this.runDue()) > 0) {
      /* until nothing is due */
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.lock.idle();
  }
}
