/**
 * npm run token -- --tenant <slug> --scope '<scopes>' [--patient <id>] [--user <Type/id>] [--role <role>]
 *
 * Prints a signed access token for scripts and operators. It signs with the server's own key
 * (SIGNING_KEY, or SIGNING_KEY_FILE / DATA_DIR/secrets/signing-key.json), so it only works
 * where the server's secrets are. Nothing is stored: the token is valid until it expires.
 */
import { loadConfig } from '../config';
import { loadSigningKey } from '../auth/keys';
import { isRole, Role, ROLES } from '../auth/roles';
import { parseScopes } from '../auth/scopes';
import { issueAccessToken } from '../auth/tokens';

const HELP = `Usage: npm run -s token -- --tenant <slug> --scope '<scopes>' [options]

Prints a signed access token (JWT) for the tenant's FHIR base, e.g.
  TOKEN=$(npm run -s token -- --tenant demo --scope 'system/*.*')
  curl -H "Authorization: Bearer $TOKEN" http://localhost:8080/fhir/demo/Patient

Options:
  --tenant <slug>     the practice (tenant) whose FHIR base the token is for (required)
  --scope '<scopes>'  SMART scopes, space-separated (required), e.g.
                        'system/*.*'                       a backend service, everything
                        'user/*.cruds'                     a user's app (needs --user), cut down by the role
                        'patient/*.rs'                     read one patient's record (needs --patient)
                        'patient/Observation.rs?category=laboratory'   granular (SMART v2)
  --patient <id>      patient in context (Patient id) for patient/ scopes
  --user <Type/id>    the user the token acts for (fhirUser), e.g. Practitioner/12 or Patient/34
  --role <role>       ${ROLES.join(' | ')} (default: practitioner for a Practitioner,
                      patient for a Patient; a user token always has a role)
  --client <id>       client_id (default: cli)
  --ttl <seconds>     lifetime (default ACCESS_TOKEN_TTL_SECONDS, 3600)
  --json              print the claims as well, as JSON
  -h, --help          this text

Reads the same configuration as the server (DATA_DIR, SIGNING_KEY, SIGNING_KEY_FILE, PUBLIC_URL, PORT).
The token's issuer and audience use PUBLIC_URL (default http://localhost:$PORT), so give the
same PUBLIC_URL/PORT as the server.`;

function args(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') out.help = 'true';
    else if (a === '--json') out.json = 'true';
    else if (a.startsWith('--')) {
      const [k, inline] = a.slice(2).split(/=(.*)/s);
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`--${k} needs a value`);
      out[k] = v;
    } else throw new Error(`Unexpected argument "${a}"`);
  }
  return out;
}

async function main(): Promise<void> {
  let a: Record<string, string>;
  try {
    a = args(process.argv.slice(2));
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${HELP}`);
    process.exit(2);
  }
  if (a.help) {
    console.log(HELP);
    return;
  }
  const fail = (msg: string) => {
    console.error(`token: ${msg} (see --help)`);
    process.exit(2);
  };
  if (!a.tenant) fail('--tenant is required');
  if (!a.scope) fail('--scope is required');
  const parsed = parseScopes(a.scope);
  if (!parsed.resource.length) fail(`"${a.scope}" holds no resource scope (e.g. system/*.* or patient/*.rs)`);
  let role: Role | undefined;
  if (a.user) {
    if (!/^(Practitioner|Patient|PractitionerRole|RelatedPerson|Person)\/[A-Za-z0-9\-.]{1,64}$/.test(a.user)) fail('--user must be a reference like Practitioner/12');
    const r = a.role ?? (a.user.startsWith('Patient/') ? 'patient' : 'practitioner');
    if (!isRole(r)) fail(`--role must be one of ${ROLES.join(', ')}`);
    role = r as Role;
  } else if (a.role) fail('--role needs --user');
  if (parsed.resource.some((s) => s.context === 'user') && !a.user) fail('user/ scopes need --user');
  if (parsed.resource.some((s) => s.context === 'patient') && !a.patient && role !== 'patient') fail('patient/ scopes need --patient');
  const config = loadConfig();
  const { token, claims } = await issueAccessToken(config, loadSigningKey(config), {
    tenant: a.tenant,
    scope: a.scope,
    clientId: a.client ?? 'cli',
    sub: a.user,
    fhirUser: a.user,
    role,
    patient: a.patient ?? (role === 'patient' ? a.user!.slice('Patient/'.length) : undefined),
    ttlSeconds: a.ttl ? Number(a.ttl) : undefined,
  });
  console.log(a.json ? JSON.stringify({ access_token: token, token_type: 'Bearer', claims }, null, 2) : token);
}

main().catch((e) => {
  console.error(`token: ${(e as Error).message}`);
  process.exit(1);
});
