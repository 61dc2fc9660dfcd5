/** Where each oidc-provider route lives under the tenant's issuer (/auth/{tenant}). */
export const ROUTES = {
  authorization: '/authorize',
  token: '/token',
  jwks: '/jwks',
  userinfo: '/userinfo',
  revocation: '/token/revocation',
  end_session: '/logout',
};
