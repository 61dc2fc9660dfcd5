import type { Knex } from 'knex';
import { enableTenantRls } from '../server/db/tenant-rls';

/**
 * Waitlist auto-fill (server/scheduling/waitlist.ts, docs/scheduling.md "Waitlist"). The
 * waitlist entries stay Appointments (status waitlist, requestedPeriod); these tables are
 * maintained in the same transactions:
 *  - waitlist_entry: one row per requestedPeriod of a waiting entry (what matching reads:
 *    patient, practitioner, types, the interval and the queue order);
 *  - waitlist_offers: a freed Slot offered to one entry, held until expires_at. Only the SHA-256
 *    of the claim token is stored. At most one open offer per Slot and one per entry (unique
 *    partial indexes), and an entry is offered a given Slot at most once.
 */
export const WAITLIST_TABLES = ['waitlist_entry', 'waitlist_offers'];

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE waitlist_entry (
      tenant_id text NOT NULL,
      entry_id text COLLATE "C" NOT NULL,
      period_no integer NOT NULL,
      patient_id text COLLATE "C" NOT NULL,
      practitioner text COLLATE "C",
      types jsonb NOT NULL DEFAULT '[]'::jsonb,
      period_start timestamptz NOT NULL,
      period_end timestamptz NOT NULL,
      rank integer NOT NULL,
      queued_at timestamptz NOT NULL,
      PRIMARY KEY (tenant_id, entry_id, period_no)
    )`);
  await knex.raw(`CREATE INDEX waitlist_entry_match ON waitlist_entry (tenant_id, period_start, period_end)`);
  await knex.raw(`
    CREATE TABLE waitlist_offers (
      tenant_id text NOT NULL,
      id text COLLATE "C" NOT NULL,
      entry_id text COLLATE "C" NOT NULL,
      slot_id text COLLATE "C" NOT NULL,
      patient_id text COLLATE "C" NOT NULL,
      token_hash text NOT NULL,
      status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'claimed', 'expired', 'withdrawn')),
      expires_at timestamptz NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      decided_at timestamptz,
      PRIMARY KEY (tenant_id, id)
    )`);
  await knex.raw(`CREATE UNIQUE INDEX waitlist_offers_token ON waitlist_offers (tenant_id, token_hash)`);
  await knex.raw(`CREATE UNIQUE INDEX waitlist_offers_open_slot ON waitlist_offers (tenant_id, slot_id) WHERE status = 'open'`);
  await knex.raw(`CREATE UNIQUE INDEX waitlist_offers_open_entry ON waitlist_offers (tenant_id, entry_id) WHERE status = 'open'`);
  await knex.raw(`CREATE UNIQUE INDEX waitlist_offers_once ON waitlist_offers (tenant_id, slot_id, entry_id)`);
  for (const t of WAITLIST_TABLES) {
    await enableTenantRls(knex, t);
    await knex.raw(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${t} TO fhir_app`);
  }
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
