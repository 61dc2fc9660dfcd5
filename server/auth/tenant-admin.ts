/** A new practice: the tenant row and its first administrator (shared by `npm run tenant` and POST /admin/tenants). */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { ensureTenant, TenantDirectory } from '../http/tenants';
import { createUser, findUserByEmail, publicUser } from './users';

export async function createTenantWithAdmin(
  db: Knex,
  input: { slug: string; name: string; adminEmail: string; adminPassword?: string },
): Promise<{ tenant: string; admin: ReturnType<typeof publicUser>; password?: string; created: boolean }> {
  const existed = Boolean(await new TenantDirectory(db, 0).get(input.slug));
  await ensureTenant(db, input.slug, input.name);
  const found = await findUserByEmail(db, input.slug, input.adminEmail);
  if (found) return { tenant: input.slug, admin: publicUser(found), created: !existed };
  const password = input.adminPassword ?? randomBytes(12).toString('base64url');
  const admin = await createUser(db, input.slug, { email: input.adminEmail, role: 'admin', name: 'Administrator', password });
  return { tenant: input.slug, admin: publicUser(admin), password: input.adminPassword ? undefined : password, created: !existed };
}
