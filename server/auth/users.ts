/**
 * People who sign in (table `users`, per tenant, RLS): staff with password (argon2id) and TOTP,
 * patients by an emailed one-time code. `fhir_user` links the user to their FHIR resource
 * (Practitioner/.. or Patient/..), which becomes the token's fhirUser claim.
 */
import { randomUUID } from 'node:crypto';
import { hash, verify } from '@node-rs/argon2';
import type { Knex } from 'knex';
import { inTenant } from '../db/tenant-tx';
import { isRole, Role } from './roles';

export interface User {
  id: string;
  email: string;
  role: Role;
  name?: string;
  fhirUser?: string;
  hasPassword: boolean;
  totpSecret?: string;
  totpEnabled: boolean;
  disabled: boolean;
}

/** Staff roles: sign in with password + TOTP. */
export const isStaff = (role: Role) => role !== 'patient';

function toUser(r: any): User {
  return {
    id: r.id,
    email: r.email,
    role: r.role,
    name: r.name ?? undefined,
    fhirUser: r.fhir_user ?? undefined,
    hasPassword: Boolean(r.password_hash),
    totpSecret: r.totp_secret ?? undefined,
    totpEnabled: r.totp_enabled,
    disabled: r.disabled,
  };
}

export const hashPassword = (pw: string) => hash(pw);

export interface NewUser {
  email: string;
  role: Role;
  name?: string;
  password?: string;
  fhirUser?: string;
  totpSecret?: string;
}

const FHIR_USER = /^(Practitioner|Patient|PractitionerRole|RelatedPerson|Person)\/[A-Za-z0-9\-.]{1,64}$/;

export async function createUser(db: Knex, tenant: string, u: NewUser): Promise<User> {
  if (!isRole(u.role)) throw new Error(`unknown role "${u.role}"`);
  if (!/^[^@\s]+@[^@\s]+$/.test(u.email)) throw new Error('invalid email address');
  if (u.fhirUser && !FHIR_USER.test(u.fhirUser)) throw new Error('fhirUser must be a reference like Practitioner/12');
  if (u.role === 'patient' && !u.fhirUser?.startsWith('Patient/')) throw new Error('a patient user needs fhirUser Patient/<id>');
  if (u.role !== 'patient' && u.password !== undefined && u.password.length < 10) throw new Error('passwords have at least 10 characters');
  const passwordHash = u.password && u.role !== 'patient' ? await hashPassword(u.password) : null;
  const id = randomUUID();
  return inTenant(db, tenant, async (tx) => {
    const r = await tx.raw(
      `INSERT INTO users (tenant_id, id, email, role, name, password_hash, totp_secret, totp_enabled, fhir_user)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *`,
      [tenant, id, u.email.trim(), u.role, u.name ?? null, passwordHash, u.totpSecret ?? null, Boolean(u.totpSecret), u.fhirUser ?? null],
    );
    return toUser(r.rows[0]);
  });
}

export async function findUserById(db: Knex, tenant: string, id: string): Promise<User | undefined> {
  return inTenant(db, tenant, async (tx) => {
    const r = await tx.raw(`SELECT * FROM users WHERE tenant_id = ? AND id = ?`, [tenant, id]);
    return r.rows[0] ? toUser(r.rows[0]) : undefined;
  });
}

export async function findUserByEmail(db: Knex, tenant: string, email: string): Promise<User | undefined> {
  return inTenant(db, tenant, async (tx) => {
    const r = await tx.raw(`SELECT * FROM users WHERE tenant_id = ? AND lower(email) = lower(?)`, [tenant, email.trim()]);
    return r.rows[0] ? toUser(r.rows[0]) : undefined;
  });
}

/** A dummy hash so that unknown emails cost as much time as wrong passwords. */
let dummy: Promise<string> | undefined;

export async function checkPassword(db: Knex, tenant: string, email: string, password: string): Promise<User | undefined> {
  const row = await inTenant(db, tenant, async (tx) => {
    const r = await tx.raw(`SELECT * FROM users WHERE tenant_id = ? AND lower(email) = lower(?)`, [tenant, email.trim()]);
    return r.rows[0];
  });
  if (!row?.password_hash || row.disabled) {
    dummy ??= hash('not-a-password');
    await verify(await dummy, password).catch(() => false);
    return undefined;
  }
  return (await verify(row.password_hash, password).catch(() => false)) ? toUser(row) : undefined;
}

export async function setTotp(db: Knex, tenant: string, id: string, secret: string, enabled: boolean): Promise<void> {
  await inTenant(db, tenant, (tx) => tx.raw(`UPDATE users SET totp_secret = ?, totp_enabled = ? WHERE tenant_id = ? AND id = ?`, [secret, enabled, tenant, id]));
}

export async function listUsers(db: Knex, tenant: string): Promise<User[]> {
  return inTenant(db, tenant, async (tx) => (await tx.raw(`SELECT * FROM users WHERE tenant_id = ? ORDER BY created_at`, [tenant])).rows.map(toUser));
}

/** What may be shown about a user over the admin API (no secrets). */
export const publicUser = (u: User) => ({ id: u.id, email: u.email, role: u.role, name: u.name, fhirUser: u.fhirUser, mfa: u.totpEnabled, disabled: u.disabled });
