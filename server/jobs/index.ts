/**
 * Background jobs: the outbox API (enqueueJob, retractJobs, defineJob) and the runner that
 * createApp starts: BullMQ relay + worker with REDIS_URL, the in-process runner without.
 * See docs/jobs.md.
 */
import type { Knex } from 'knex';
import type { Config } from '../config';
import type { TenantDirectory } from '../http/tenants';
import { Mailer } from '../mail/mailer';
import { Clock, systemClock } from './outbox';
import { QueueRelay, QueueRelayOptions } from './queue-relay';
import { InProcessRunner, Jobs, JobsOptions } from './runner';
// The handlers this server defines (registered on import).
import './appointment-notices';

export { defineJob, enqueueJob, retractJobs, listJobs, systemClock } from './outbox';
export type { Clock, Job, JobContext, JobHandler, JobInput } from './outbox';
export type { Jobs, JobsOptions } from './runner';

export interface CreateJobsDeps {
  config: Config;
  db: Knex;
  tenants: TenantDirectory;
  clock?: Clock;
  mail?: Mailer;
}

export function createJobs(deps: CreateJobsDeps, opts: JobsOptions & Partial<Omit<QueueRelayOptions, 'redisUrl'>> & { redisUrl?: string | null } = {}): Jobs {
  const { config } = deps;
  const full = {
    config,
    db: deps.db,
    tenants: deps.tenants,
    clock: deps.clock ?? systemClock,
    mail: deps.mail ?? new Mailer({ smtpUrl: config.smtpUrl, from: config.mailFrom, publicUrl: config.publicUrl }),
  };
  const redisUrl = opts.redisUrl === null ? undefined : (opts.redisUrl ?? config.redisUrl);
  if (redisUrl) return new QueueRelay(full, { prefix: config.jobQueuePrefix, ...opts, redisUrl });
  return new InProcessRunner(full, opts);
}
