/**
 * For command-line tools that call a server on the same machine (import): a short-lived
 * system token signed with the server's own key, for the tenant named in a FHIR base URL.
 */
import { loadConfig } from '../config';
import { loadSigningKey } from './keys';
import { issueAccessToken } from './tokens';

export async function localToken(baseUrl: string, scope = 'system/*.*', ttlSeconds = 3600): Promise<string> {
  const m = /^(https?:\/\/[^/]+(?:\/.*?)?)\/fhir\/([a-z0-9][a-z0-9-]{0,62})\/?$/.exec(baseUrl);
  if (!m) throw new Error(`Cannot tell the tenant from "${baseUrl}" (expected .../fhir/<tenant>); pass a token instead`);
  const config = loadConfig();
  const key = loadSigningKey(config);
  return (await issueAccessToken({ ...config, publicUrl: m[1] }, key, { tenant: m[2], scope, clientId: 'cli-import', ttlSeconds })).token;
}
