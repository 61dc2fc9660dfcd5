/**
 * The transactional outbox: jobs are rows of `jobs` (migrations/010_jobs.ts) written in the
 * transaction of the change that causes them (enqueueJob), cancelled the same way (retractJobs),
 * and run by executeJob: the row is locked, its handler runs in a savepoint of that transaction,
 * and the row is marked done in it, so a job's effects (a Communication, ...) and its completion
 * commit together. A redelivered job finds its row done and does nothing.
 */
import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Config } from '../config';
import type { Tx } from '../db/tenant-tx';
import type { TenantSettings } from '../fhir/types';
import { logger } from '../log';
import type { Mailer } from '../mail/mailer';
import { jobRuns } from '../http/metrics';

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

export interface JobInput {
  /** Which handler runs it (defineJob). */
  kind: string;
  /** Unique per tenant: enqueueing a key that exists (in any state) is a no-op. */
  key: string;
  /** Not before this time (default: now). */
  runAt?: Date;
  /** Ids and options only, never PHI: handlers load what they need when they run. */
  payload: object;
}

export interface Job<P = Record<string, unknown>> {
  id: string;
  tenant: string;
  kind: string;
  key: string;
  runAt: Date;
  payload: P;
  /** Failed attempts before this one. */
  attempts: number;
}

export interface JobTenant {
  id: string;
  name: string;
  /** Absolute FHIR base of the tenant. */
  baseUrl: string;
  settings: TenantSettings;
}

export interface JobContext {
  /** The job's transaction (a savepoint): the handler's writes commit with the job's completion. */
  tx: Tx;
  tenant: JobTenant;
  db: Knex;
  config: Config;
  clock: Clock;
  mail: Mailer;
}

/** Returns a short note stored with the job (e.g. 'sent', 'skipped: no email address'); no PHI. */
export type JobHandler<P = any> = (job: Job<P>, ctx: JobContext) => Promise<string | void>;

const handlers = new Map<string, JobHandler>();

/** Registers the handler of a kind of job (once per process; a second definition replaces the first). */
export function defineJob<P = any>(kind: string, handler: JobHandler<P>): void {
  handlers.set(kind, handler as JobHandler);
}

export function jobHandler(kind: string): JobHandler | undefined {
  return handlers.get(kind);
}

const KEY_MAX = 400;

/**
 * Writes a job in the caller's transaction: it exists if and only if that transaction commits.
 * Returns the job id and whether it was new (false: a job with this key already existed).
 */
export async function enqueueJob(tx: Tx, job: JobInput): Promise<{ id: string; created: boolean }> {
  if (!job.kind || !job.key || job.key.length > KEY_MAX) throw new Error(`a job needs a kind and a key of 1-${KEY_MAX} characters`);
  const id = randomUUID();
  const r = await tx.raw(
    `INSERT INTO jobs (tenant_id, id, key, kind, payload, run_at)
     VALUES (?, ?, ?, ?, ?::json, COALESCE(?::timestamptz, now()))
     ON CONFLICT (tenant_id, key) DO NOTHING RETURNING id`,
    [tx.tenant, id, job.key, job.kind, JSON.stringify(job.payload ?? {}), job.runAt ? job.runAt.toISOString() : null],
  );
  if (r.rows.length) return { id, created: true };
  const existing = await tx.raw(`SELECT id FROM jobs WHERE tenant_id = ? AND key = ?`, [tx.tenant, job.key]);
  return { id: existing.rows[0]?.id, created: false };
}

const likePrefix = (p: string) => p.replace(/[\\%_]/g, (c) => '\\' + c) + '%';

/**
 * Cancels the jobs whose key starts with `keyPrefix` that have not run yet (pending, or relayed
 * to the queue: the worker skips a retracted row); `except` keeps keys with that prefix. Returns
 * how many were retracted.
 */
export async function retractJobs(tx: Tx, keyPrefix: string, opts: { except?: string } = {}): Promise<number> {
  if (!keyPrefix) throw new Error('retractJobs needs a key prefix');
  const r = await tx.raw(
    `UPDATE jobs SET state = 'retracted', finished_at = now()
      WHERE tenant_id = ? AND key LIKE ? AND state IN ('pending', 'relayed')
        ${opts.except ? 'AND key NOT LIKE ?' : ''} RETURNING id`,
    [tx.tenant, likePrefix(keyPrefix), ...(opts.except ? [likePrefix(opts.except)] : [])],
  );
  return r.rows.length;
}

/**
 * Deletes the tenant's jobs that finished (done or retracted) before `before`; failed jobs stay
 * for an operator to look at. Their keys can be enqueued again afterwards.
 */
export async function purgeFinishedJobs(tx: Tx, before: Date): Promise<number> {
  const r = await tx.raw(`DELETE FROM jobs WHERE tenant_id = ? AND state IN ('done', 'retracted') AND finished_at < ? RETURNING id`, [tx.tenant, before]);
  return r.rows.length;
}

/** What jobs of a tenant exist under a key prefix (tests, operators). */
export async function listJobs(tx: Tx, keyPrefix = ''): Promise<Array<{ id: string; key: string; kind: string; state: string; runAt: Date; attempts: number; result: string | null; lastError: string | null }>> {
  const r = await tx.raw(
    `SELECT id, key, kind, state, run_at, attempts, result, last_error FROM jobs WHERE tenant_id = ? AND key LIKE ? ORDER BY run_at, key`,
    [tx.tenant, likePrefix(keyPrefix)],
  );
  return r.rows.map((x: any) => ({ id: x.id, key: x.key, kind: x.kind, state: x.state, runAt: new Date(x.run_at), attempts: x.attempts, result: x.result, lastError: x.last_error }));
}

export interface ExecuteOptions {
  config: Config;
  db: Knex;
  clock: Clock;
  mail: Mailer;
  tenant: JobTenant;
  maxAttempts: number;
  /** Delay before retry n (1-based), ms. */
  backoffMs: (attempt: number) => number;
}

export type ExecuteOutcome = 'done' | 'skipped' | 'retry' | 'failed';

export interface JobRow {
  id: string;
  key: string;
  kind: string;
  payload: unknown;
  run_at: Date | string;
  state: string;
  attempts: number;
}

export const JOB_COLUMNS = 'id, key, kind, payload, run_at, state, attempts';

/**
 * Runs one locked job row in its transaction: skipped unless pending/relayed; on success marked
 * done (with the handler's writes); on failure the handler's writes are rolled back and the job
 * waits for its next attempt (state pending, run_at = now + backoff) or is failed for good.
 */
export async function executeLocked(tx: Tx, row: JobRow, o: ExecuteOptions): Promise<ExecuteOutcome> {
  const outcome = await execute(tx, row, o);
  jobRuns.inc({ kind: row.kind, outcome });
  return outcome;
}

async function execute(tx: Tx, row: JobRow, o: ExecuteOptions): Promise<ExecuteOutcome> {
  if (row.state !== 'pending' && row.state !== 'relayed') return 'skipped';
  const job: Job = {
    id: row.id,
    tenant: tx.tenant,
    kind: row.kind,
    key: row.key,
    runAt: new Date(row.run_at),
    payload: (typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload) as Record<string, unknown>,
    attempts: row.attempts,
  };
  const handler = handlers.get(row.kind);
  try {
    if (!handler) throw new Error(`no handler for job kind "${row.kind}" in this process`);
    const note = await tx.transaction((sp) => handler(job, { tx: sp, tenant: o.tenant, db: o.db, config: o.config, clock: o.clock, mail: o.mail }));
    await tx.raw(`UPDATE jobs SET state = 'done', finished_at = ?, result = ? WHERE tenant_id = ? AND id = ?`, [
      o.clock.now(),
      (note || 'done').slice(0, 200),
      tx.tenant,
      row.id,
    ]);
    return 'done';
  } catch (e) {
    const attempts = row.attempts + 1;
    const message = String((e as Error)?.message ?? e).slice(0, 500);
    const failed = attempts >= o.maxAttempts;
    logger.warn({ tenant: tx.tenant, job: row.id, kind: row.kind, attempts, failed, err: { message } }, failed ? 'job failed for good' : 'job failed; will retry');
    await tx.raw(
      `UPDATE jobs SET state = ?, attempts = ?, last_error = ?, run_at = ?, finished_at = ? WHERE tenant_id = ? AND id = ?`,
      [failed ? 'failed' : 'pending', attempts, message, failed ? new Date(row.run_at) : new Date(o.clock.now().getTime() + o.backoffMs(attempts)), failed ? o.clock.now() : null, tx.tenant, row.id],
    );
    return failed ? 'failed' : 'retry';
  }
}
