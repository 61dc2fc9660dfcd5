/**
 * Demo sign-in: known users for the demo tenant and the portal's public client. Only with DEMO on.
 * The TOTP secret is fixed and, in DEMO mode only, the TOTP page shows the current code.
 */
import type { Knex } from 'knex';
import type { Config } from '../config';
import { inTenant } from '../db/tenant-tx';
import { loadSigningKey } from '../auth/keys';
import { createTenantAuth } from '../auth/provider';
import { registerClient } from '../auth/clients';
import { createUser, findUserByEmail } from '../auth/users';

export const DEMO_CREDENTIALS = {
  admin: { email: 'admin@demo.practice', password: 'demo-admin-2026' },
  practitioner: { email: 'dr.demo@demo.practice', password: 'demo-doctor-2026' },
  patient: { email: 'patient@demo.practice' },
  totpSecret: 'DEMOTOTPSECRETDEMOTOTPSECRETDEMO',
  portalClientId: 'portal',
};

async function firstId(db: Knex, type: string): Promise<string | undefined> {
  return inTenant(db, 'demo', async (tx) => {
    const r = await tx.raw(`SELECT id FROM resources WHERE tenant_id = 'demo' AND res_type = ? AND NOT deleted ORDER BY last_updated, id LIMIT 1`, [type]);
    return r.rows[0]?.id;
  });
}

export async function ensureDemoAuth(db: Knex, config: Config): Promise<void> {
  const c = DEMO_CREDENTIALS;
  const practitioner = await firstId(db, 'Practitioner');
  const patient = await firstId(db, 'Patient');
  const ensure = async (email: string, make: () => Promise<unknown>) => {
    if (!(await findUserByEmail(db, 'demo', email))) await make();
  };
  await ensure(c.admin.email, () => createUser(db, 'demo', { email: c.admin.email, role: 'admin', name: 'Demo administrator', password: c.admin.password, totpSecret: c.totpSecret }));
  await ensure(c.practitioner.email, () =>
    createUser(db, 'demo', { email: c.practitioner.email, role: 'practitioner', name: 'Demo practitioner', password: c.practitioner.password, totpSecret: c.totpSecret, fhirUser: practitioner ? `Practitioner/${practitioner}` : undefined }),
  );
  if (patient) await ensure(c.patient.email, () => createUser(db, 'demo', { email: c.patient.email, role: 'patient', name: 'Demo patient', fhirUser: `Patient/${patient}` }));
  // The portal: a public SMART app at the server's own origin (re-registered on every start so
  // its redirect URI follows PUBLIC_URL).
  const auth = createTenantAuth(config, db, loadSigningKey(config), 'demo');
  await auth.store.destroy('Client', c.portalClientId);
  await registerClient(auth, {
    kind: 'public',
    client_id: c.portalClientId,
    client_name: 'Practice portal',
    redirect_uris: [`${config.publicUrl}/`, `${config.publicUrl}/index.html`],
    scope: 'openid fhirUser user/*.rs user/Appointment.cu',
  });
}
