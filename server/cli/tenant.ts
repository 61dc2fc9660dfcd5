/**
 * npm run tenant -- create <slug> --name '<practice name>' --admin-email <email> [--admin-password <pw>]
 * npm run tenant -- add-user <slug> --email <email> --role <role> [--password <pw>] [--fhir-user <Type/id>]
 * npm run tenant -- add-client <slug> --kind public|confidential|backend [--redirect-uri <url>] [--scope '<policy>'] [--jwks-uri <url>] [--client-id <id>]
 * npm run tenant -- set-federation <slug> --issuer <url> --client-id <id> [--client-secret <s>] [--scope '<scopes>'] [--label <text>] [--role <role>]...
 * npm run tenant -- remove-federation <slug>
 *
 * Works on the database the server uses (DATABASE_URL, or the embedded one in DATA_DIR while the
 * server is stopped); applies pending migrations first.
 */
import { loadConfig } from '../config';
import { openDatabase } from '../db/connection';
import { loadSigningKey } from '../auth/keys';
import { createTenantAuth } from '../auth/provider';
import { registerClient, ClientKind } from '../auth/clients';
import { isRole, ROLES } from '../auth/roles';
import { createTenantWithAdmin } from '../auth/tenant-admin';
import { createUser, publicUser } from '../auth/users';
import { isLocalDevelopment, publicFederation, setFederation, validateFederation } from '../auth/federation';
import { TenantDirectory } from '../http/tenants';
import { cliAudit } from '../audit/cli-audit';

const HELP = `Usage:
  npm run tenant -- create <slug> --name '<practice name>' --admin-email <email> [--admin-password <pw>]
      a new practice (tenant) and its first administrator; without --admin-password one is
      generated and printed once. The administrator enrols TOTP at the first sign-in.
  npm run tenant -- add-user <slug> --email <email> --role <${ROLES.join('|')}> [--password <pw>] [--fhir-user <Type/id>]
      staff sign in with a password (10+ characters) + TOTP; patients (--fhir-user Patient/<id>) by emailed code.
  npm run tenant -- add-client <slug> --kind <public|confidential|asymmetric|backend> [--redirect-uri <url>]...
                   [--scope '<scope policy>'] [--jwks-uri <url>] [--client-id <id>] [--name <name>]
      registers an OAuth client (prints its metadata; a confidential client's secret only here).
  npm run tenant -- set-federation <slug> --issuer <url> --client-id <id> [--client-secret <secret>]
                   [--scope '<scopes>'] [--label <text>] [--role <role>]... [--allow-unverified-email] [--no-idp-mfa]
      "Sign in with <label>" through the practice's OpenID Connect provider (Auth0, Entra ID, ...).
      Register ${'$'}PUBLIC_URL/auth/<slug>/federation/callback as the redirect URI at the provider.
      --scope      default 'openid email'          --label  the button text (default 'your organisation account')
      --role       who may use it (repeatable; default the staff roles: admin, practitioner, physician, nurse)
      --client-secret  or the environment variable FEDERATION_CLIENT_SECRET (keeps it out of the shell history);
                   left out: the stored secret stays when issuer and client id are unchanged
      --allow-unverified-email  accept an email the provider has not verified (default: email_verified must be true)
      --no-idp-mfa does not count the provider's MFA (amr mfa/otp) as the second factor: staff always enter our TOTP
      The email the provider reports must belong to an existing user of the practice (add-user first).
  npm run tenant -- remove-federation <slug>
      removes the external sign-in (the password and email-code sign-in stay).

Uses DATABASE_URL (or the embedded database in DATA_DIR; stop the server first) and PUBLIC_URL.`;

/** Options without a value. */
const FLAGS = new Set(['--allow-unverified-email', '--no-idp-mfa']);

function parse(argv: string[]) {
  const pos: string[] = [];
  const opts: Record<string, string[]> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') opts.help = ['1'];
    else if (FLAGS.has(a)) opts[a.slice(2)] = ['1'];
    else if (a.startsWith('--')) {
      const [k, inline] = a.slice(2).split(/=(.*)/s);
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`--${k} needs a value`);
      (opts[k] ??= []).push(v);
    } else pos.push(a);
  }
  return { pos, opt: (k: string) => opts[k]?.[0], all: (k: string) => opts[k] ?? [], help: Boolean(opts.help) };
}

async function main(): Promise<void> {
  const a = parse(process.argv.slice(2));
  const [cmd, slug] = a.pos;
  if (a.help || !cmd) {
    console.log(HELP);
    return;
  }
  const fail = (m: string) => {
    console.error(`tenant: ${m} (see --help)`);
    process.exit(2);
  };
  if (!slug) fail('the tenant slug is required');
  const config = loadConfig();
  const db = await openDatabase(config, { migrate: true });
  const audit = cliAudit(db.app, 'npm run tenant');
  try {
    if (cmd === 'create') {
      const email = a.opt('admin-email');
      if (!email) fail('--admin-email is required');
      const out = await createTenantWithAdmin(db.app, { slug, name: a.opt('name') ?? slug, adminEmail: email!, adminPassword: a.opt('admin-password') });
      audit.action(slug, `create: ${out.created ? 'tenant created' : 'tenant exists'}, admin user ${out.admin.id}`);
      console.log(`${out.created ? 'Created' : 'Found'} tenant ${slug}: FHIR base ${config.publicUrl}/fhir/${slug}`);
      console.log(`Administrator: ${out.admin.email}${out.password ? `  password: ${out.password}  (shown once)` : ''}`);
      console.log(`Sign-in: ${config.publicUrl}/auth/${slug} (TOTP enrolment at the first sign-in)`);
    } else if (cmd === 'add-user') {
      const role = a.opt('role');
      if (!isRole(role)) fail(`--role must be one of ${ROLES.join(', ')}`);
      const u = await createUser(db.app, slug, { email: a.opt('email') ?? '', role: role as never, password: a.opt('password'), fhirUser: a.opt('fhir-user'), name: a.opt('name') });
      audit.action(slug, `add-user: user ${u.id} (${u.role})`);
      console.log(JSON.stringify(publicUser(u), null, 2));
    } else if (cmd === 'add-client') {
      const auth = createTenantAuth(config, db.app, loadSigningKey(config), slug);
      const out = await registerClient(auth, {
        kind: (a.opt('kind') ?? 'public') as ClientKind,
        client_id: a.opt('client-id'),
        client_name: a.opt('name'),
        redirect_uris: a.all('redirect-uri'),
        scope: a.opt('scope'),
        jwks_uri: a.opt('jwks-uri'),
      });
      audit.action(slug, `add-client: client ${String((out as { client_id?: unknown }).client_id)}`);
      console.log(JSON.stringify(out, null, 2));
    } else if (cmd === 'set-federation') {
      const tenants = new TenantDirectory(db.app, 0);
      if (!(await tenants.get(slug))) fail(`no tenant "${slug}"`);
      const previous = (await tenants.get(slug))?.settings.federation;
      const f = validateFederation(
        {
          issuer: a.opt('issuer'),
          clientId: a.opt('client-id'),
          clientSecret: a.opt('client-secret') ?? (process.env.FEDERATION_CLIENT_SECRET || undefined),
          scopes: a.opt('scope'),
          label: a.opt('label'),
          roles: a.all('role').length ? a.all('role') : undefined,
          requireEmailVerified: !a.opt('allow-unverified-email'),
          acceptIdpMfa: !a.opt('no-idp-mfa'),
        },
        previous,
        { allowHttpLoopback: isLocalDevelopment(config.publicUrl) },
      );
      await setFederation(db.app, slug, f);
      audit.action(slug, `set-federation: issuer ${f.issuer}`);
      console.log(JSON.stringify(publicFederation(f), null, 2));
      console.log(`Redirect URI to register at the identity provider: ${config.publicUrl}/auth/${slug}/federation/callback`);
      console.log('Running servers pick the change up within 30 seconds.');
    } else if (cmd === 'remove-federation') {
      await setFederation(db.app, slug, undefined);
      audit.action(slug, 'remove-federation');
      console.log(`Tenant ${slug}: external sign-in removed.`);
    } else fail(`unknown command "${cmd}"`);
  } finally {
    await audit.close();
    await db.close();
  }
}

main().catch((e) => {
  console.error(`tenant: ${(e as Error).message}`);
  process.exit(1);
});
