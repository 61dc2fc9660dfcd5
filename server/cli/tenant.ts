/**
 * npm run tenant -- create <slug> --name '<practice name>' --admin-email <email> [--admin-password <pw>]
 * npm run tenant -- add-user <slug> --email <email> --role <role> [--password <pw>] [--fhir-user <Type/id>]
 * npm run tenant -- add-client <slug> --kind public|confidential|backend [--redirect-uri <url>] [--scope '<policy>'] [--jwks-uri <url>] [--client-id <id>]
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

const HELP = `Usage:
  npm run tenant -- create <slug> --name '<practice name>' --admin-email <email> [--admin-password <pw>]
      a new practice (tenant) and its first administrator; without --admin-password one is
      generated and printed once. The administrator enrols TOTP at the first sign-in.
  npm run tenant -- add-user <slug> --email <email> --role <${ROLES.join('|')}> [--password <pw>] [--fhir-user <Type/id>]
      staff sign in with a password (10+ characters) + TOTP; patients (--fhir-user Patient/<id>) by emailed code.
  npm run tenant -- add-client <slug> --kind <public|confidential|asymmetric|backend> [--redirect-uri <url>]...
                   [--scope '<scope policy>'] [--jwks-uri <url>] [--client-id <id>] [--name <name>]
      registers an OAuth client (prints its metadata; a confidential client's secret only here).

Uses DATABASE_URL (or the embedded database in DATA_DIR; stop the server first) and PUBLIC_URL.`;

function parse(argv: string[]) {
  const pos: string[] = [];
  const opts: Record<string, string[]> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') opts.help = ['1'];
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
  try {
    if (cmd === 'create') {
      const email = a.opt('admin-email');
      if (!email) fail('--admin-email is required');
      const out = await createTenantWithAdmin(db.app, { slug, name: a.opt('name') ?? slug, adminEmail: email!, adminPassword: a.opt('admin-password') });
      console.log(`${out.created ? 'Created' : 'Found'} tenant ${slug}: FHIR base ${config.publicUrl}/fhir/${slug}`);
      console.log(`Administrator: ${out.admin.email}${out.password ? `  password: ${out.password}  (shown once)` : ''}`);
      console.log(`Sign-in: ${config.publicUrl}/auth/${slug} (TOTP enrolment at the first sign-in)`);
    } else if (cmd === 'add-user') {
      const role = a.opt('role');
      if (!isRole(role)) fail(`--role must be one of ${ROLES.join(', ')}`);
      const u = await createUser(db.app, slug, { email: a.opt('email') ?? '', role: role as never, password: a.opt('password'), fhirUser: a.opt('fhir-user'), name: a.opt('name') });
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
      console.log(JSON.stringify(out, null, 2));
    } else fail(`unknown command "${cmd}"`);
  } finally {
    await db.close();
  }
}

main().catch((e) => {
  console.error(`tenant: ${(e as Error).message}`);
  process.exit(1);
});
