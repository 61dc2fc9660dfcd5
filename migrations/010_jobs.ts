import type { Knex } from 'knex';
import { enableTenantRls } from '../server/db/tenant-rls';

/**
 * Background jobs (server/jobs/): the transactional outbox `jobs` (written in the transaction of
 * the change that causes the job, run by the in-process runner or relayed to BullMQ, marked done
 * in the transaction of its effect) and the practitioners' calendar feed tokens (only a hash of
 * the secret is kept). Tenant data like any other: tenant_id, RLS forced.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE jobs (
      tenant_id text NOT NULL,
      id uuid NOT NULL,
      key text COLLATE "C" NOT NULL, -- prefix LIKE (retractJobs) uses the index
      kind text NOT NULL,
      payload json NOT NULL,
      run_at timestamptz NOT NULL,
      state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'relayed', 'done', 'retracted', 'failed')),
      attempts integer NOT NULL DEFAULT 0,
      last_error text,
      result text,
      created_at timestamptz NOT NULL DEFAULT now(),
      relayed_at timestamptz,
      finished_at timestamptz,
      PRIMARY KEY (tenant_id, id)
    )`);
  // Idempotency: one job per key and tenant, whatever its state.
  await knex.raw(`CREATE UNIQUE INDEX jobs_key ON jobs (tenant_id, key)`);
  await knex.raw(`CREATE INDEX jobs_due ON jobs (run_at) WHERE state IN ('pending', 'relayed')`);
  await knex.raw(`
    CREATE TABLE calendar_tokens (
      tenant_id text NOT NULL,
      practitioner_id text NOT NULL,
      token_hash text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (tenant_id, practitioner_id)
    )`);
  await knex.raw(`CREATE UNIQUE INDEX calendar_tokens_hash ON calendar_tokens (tenant_id, token_hash)`);
  for (const t of ['jobs', 'calendar_tokens']) {
    await enableTenantRls(knex, t);
    await knex.raw(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${t} TO fhir_app`);
  }

  // Which tenants have jobs to run or relay (slugs only), for the runner and the relay, which
  // serve every tenant: pending jobs due by `horizon`, and relayed jobs not finished whose run
  // time is older than `stale` (lost by the queue: replayed).
  await knex.raw(`
    CREATE OR REPLACE FUNCTION jobs_due_tenants(horizon timestamptz, stale timestamptz) RETURNS SETOF text
    LANGUAGE sql SECURITY DEFINER SET search_path = public AS $fn$
      SELECT DISTINCT tenant_id FROM jobs
       WHERE (state = 'pending' AND run_at <= horizon) OR (state = 'relayed' AND run_at < stale AND relayed_at < stale)
    $fn$`);
  await knex.raw(`REVOKE ALL ON FUNCTION jobs_due_tenants(timestamptz, timestamptz) FROM PUBLIC`);
  await knex.raw(`GRANT EXECUTE ON FUNCTION jobs_due_tenants(timestamptz, timestamptz) TO fhir_app`);
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
