import type { Knex } from 'knex';
import { enableTenantRls } from '../server/db/tenant-rls';

/**
 * The authorization server's tables (server/auth/): users who sign in, oidc-provider's state
 * (sessions, grants, codes, refresh tokens, registered clients, launch contexts, sign-in
 * challenges) and failed sign-ins (lockout). Tenant data like any other: tenant_id, RLS forced.
 */
export const AUTH_TABLES = ['users', 'oidc_store', 'auth_failures'];

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE users (
      tenant_id text NOT NULL,
      id text NOT NULL,
      email text NOT NULL,
      role text NOT NULL CHECK (role IN ('admin', 'practitioner', 'physician', 'nurse', 'patient')),
      name text,
      password_hash text,
      totp_secret text,
      totp_enabled boolean NOT NULL DEFAULT false,
      fhir_user text,
      disabled boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (tenant_id, id)
    )`);
  await knex.raw(`CREATE UNIQUE INDEX users_email ON users (tenant_id, lower(email))`);
  await knex.raw(`
    CREATE TABLE oidc_store (
      tenant_id text NOT NULL,
      model text NOT NULL,
      id text NOT NULL,
      payload jsonb NOT NULL,
      grant_id text,
      uid text,
      expires_at timestamptz,
      consumed_at timestamptz,
      PRIMARY KEY (tenant_id, model, id)
    )`);
  await knex.raw(`CREATE INDEX oidc_store_grant ON oidc_store (tenant_id, grant_id) WHERE grant_id IS NOT NULL`);
  await knex.raw(`CREATE INDEX oidc_store_uid ON oidc_store (tenant_id, uid) WHERE uid IS NOT NULL`);
  await knex.raw(`CREATE INDEX oidc_store_expires ON oidc_store (expires_at)`);
  await knex.raw(`
    CREATE TABLE auth_failures (
      tenant_id text NOT NULL,
      ip text NOT NULL,
      at timestamptz NOT NULL DEFAULT now(),
      email_hash text
    )`);
  await knex.raw(`CREATE INDEX auth_failures_ip ON auth_failures (tenant_id, ip, at)`);
  for (const t of AUTH_TABLES) {
    await enableTenantRls(knex, t);
    await knex.raw(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${t} TO fhir_app`);
  }
}

export async function down(): Promise<void> {
  throw new Error('Migrations are forward-only');
}
