/** `GET /fhir/{tenant}/.well-known/smart-configuration` (SMART App Launch 2.x, conformance.html). */
import type { Config } from '../config';
import { ROUTES } from './routes';
import { issuerOf } from './tokens';

export function smartConfiguration(config: Config, tenant: string) {
  const issuer = issuerOf(config, tenant);
  return {
    issuer,
    jwks_uri: `${issuer}${ROUTES.jwks}`,
    authorization_endpoint: `${issuer}${ROUTES.authorization}`,
    token_endpoint: `${issuer}${ROUTES.token}`,
    introspection_endpoint: `${issuer}/token/introspection`,
    revocation_endpoint: `${issuer}${ROUTES.revocation}`,
    userinfo_endpoint: `${issuer}${ROUTES.userinfo}`,
    management_endpoint: `${issuer}/admin/clients`,
    grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types_supported: ['code'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384', 'RS256', 'ES256'],
    scopes_supported: [
      'openid', 'fhirUser', 'launch', 'launch/patient', 'launch/encounter', 'offline_access', 'online_access',
      'patient/*.rs', 'patient/*.cruds', 'user/*.rs', 'user/*.cruds', 'system/*.rs', 'system/*.cruds',
      'patient/*.read', 'user/*.read', 'system/*.read',
    ],
    capabilities: [
      'launch-ehr', 'launch-standalone', 'authorize-post', 'client-public', 'client-confidential-symmetric',
      'client-confidential-asymmetric', 'sso-openid-connect', 'context-banner', 'context-style', 'context-ehr-patient',
      'context-ehr-encounter', 'context-standalone-patient', 'permission-offline', 'permission-patient', 'permission-user',
      'permission-v1', 'permission-v2',
    ],
  };
}

/** The CapabilityStatement's rest.security (SMART oauth-uris extension). */
export function capabilitySecurity(fhirBase: string) {
  const issuer = fhirBase.replace(/\/fhir\/([^/]+)$/, '/auth/$1');
  return {
    cors: true,
    service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
    description: 'OAuth 2.0 / SMART App Launch 2.x; see .well-known/smart-configuration',
    extension: [
      {
        url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
        extension: [
          { url: 'authorize', valueUri: `${issuer}${ROUTES.authorization}` },
          { url: 'token', valueUri: `${issuer}${ROUTES.token}` },
          { url: 'introspect', valueUri: `${issuer}/token/introspection` },
          { url: 'revoke', valueUri: `${issuer}${ROUTES.revocation}` },
          { url: 'manage', valueUri: `${issuer}/admin/clients` },
        ],
      },
    ],
  };
}
