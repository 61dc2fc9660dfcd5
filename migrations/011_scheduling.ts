import type { Knex } from 'knex';
import { enableTenantRls } from '../server/db/tenant-rls';

/**
 * Scheduling (server/scheduling/, docs/scheduling.md). The FHIR resources (PractitionerRole,
 * Schedule, Slot, Appointment) stay the record; these tables are what the database enforces and
 * what $find reads, written in the same transaction as the resources (the resource modules' write
 * hooks):
 *  - sched_schedule: one row per Schedule generated from a PractitionerRole's hours (its rules);
 *  - sched_slot: every Slot's schedule, practitioner, interval and status (the $find index);
 *  - booked_slot: which Appointment holds a Slot; the primary key makes a second booking of the
 *    same Slot fail in the database, whatever the path (REST, Bundle, $book);
 *  - booked_time: the time a practitioner is booked; the exclusion constraint refuses two
 *    overlapping active Appointments of one practitioner, even when they name no Slot.
 */
export const SCHEDULING_TABLES = ['sched_schedule', 'sched_slot', 'booked_slot', 'booked_time'];

export async function up(knex: Knex): Promise<void> {
  // Needed for "tenant_id WITH =" and "actor WITH =" in a GiST exclusion constraint (trusted
  // extension: the database owner may create it; PGlite loads it from its contrib build).
  await knex.raw(`CREATE EXTENSION IF NOT EXISTS btree_gist`);
  await knex.raw(`
    CREATE TABLE sched_schedule (
      tenant_id text NOT NULL,
      schedule_id text COLLATE "C" NOT NULL,
      role_id text COLLATE "C" NOT NULL,
      practitioner text COLLATE "C",
      rules jsonb NOT NULL,
      horizon_end timestamptz,
      PRIMARY KEY (tenant_id, schedule_id)
    )`);
  await knex.raw(`CREATE UNIQUE INDEX sched_schedule_role ON sched_schedule (tenant_id, role_id)`);
  await knex.raw(`CREATE INDEX sched_schedule_practitioner ON sched_schedule (tenant_id, practitioner)`);
  await knex.raw(`
    CREATE TABLE sched_slot (
      tenant_id text NOT NULL,
      slot_id text COLLATE "C" NOT NULL,
      schedule_id text COLLATE "C" NOT NULL,
      practitioner text COLLATE "C",
      start_at timestamptz NOT NULL,
      end_at timestamptz NOT NULL,
      status text NOT NULL,
      PRIMARY KEY (tenant_id, slot_id)
    )`);
  await knex.raw(`CREATE INDEX sched_slot_schedule_start ON sched_slot (tenant_id, schedule_id, start_at)`);
  await knex.raw(`CREATE INDEX sched_slot_practitioner_start ON sched_slot (tenant_id, practitioner, start_at)`);
  await knex.raw(`CREATE INDEX sched_slot_free_start ON sched_slot (tenant_id, start_at) WHERE status = 'free'`);
  await knex.raw(`
    CREATE TABLE booked_slot (
      tenant_id text NOT NULL,
      slot_id text COLLATE "C" NOT NULL,
      appointment_id text COLLATE "C" NOT NULL,
      PRIMARY KEY (tenant_id, slot_id)
    )`);
  await knex.raw(`CREATE INDEX booked_slot_appointment ON booked_slot (tenant_id, appointment_id)`);
  await knex.raw(`
    CREATE TABLE booked_time (
      tenant_id text NOT NULL,
      appointment_id text COLLATE "C" NOT NULL,
      actor text COLLATE "C" NOT NULL,
      period tstzrange NOT NULL,
      PRIMARY KEY (tenant_id, appointment_id, actor),
      CONSTRAINT booked_time_no_overlap EXCLUDE USING gist (tenant_id WITH =, actor WITH =, period WITH &&)
    )`);
  for (const t of SCHEDULING_TABLES) {
    await enableTenantRls(knex, t);
    await knex.raw(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${t} TO fhir_app`);
  }
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
