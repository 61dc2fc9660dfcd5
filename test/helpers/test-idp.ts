/**
 * An external OpenID Connect identity provider for the federation tests: a second oidc-provider
 * (the library the server itself uses) on an ephemeral port, with one confidential client for the
 * FHIR server and a scripted sign-in page: the test posts the account id it wants to be (or
 * "deny", which answers access_denied). Consent is implied (first-party client).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface IdpAccount {
  email?: string;
  email_verified?: boolean;
  /** authentication methods reported in the id_token (RFC 8176) */
  amr?: string[];
}

export interface TestIdp {
  issuer: string;
  clientId: string;
  clientSecret: string;
  close(): Promise<void>;
}

export async function startTestIdp(redirectUris: string[], accounts: Record<string, IdpAccount>): Promise<TestIdp> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const lib = require('oidc-provider');
  const Provider = lib.default ?? lib.Provider ?? lib;
  let handler: http.RequestListener = (_req, res) => res.writeHead(503).end();
  const server = http.createServer((req, res) => handler(req, res));
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clientId = 'fhir-practice-server';
  const clientSecret = 'idp-client-secret-for-tests-0123456789';

  const provider = new Provider(issuer, {
    clients: [{ client_id: clientId, client_secret: clientSecret, redirect_uris: redirectUris, response_types: ['code'], grant_types: ['authorization_code'], token_endpoint_auth_method: 'client_secret_basic' }],
    cookies: { keys: ['test-idp-cookie-key'] },
    claims: { openid: ['sub', 'amr'], email: ['email', 'email_verified'] },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx: unknown, i: { uid: string }) => `/interaction/${i.uid}` },
    pkce: { required: () => true },
    async findAccount(_ctx: unknown, sub: string) {
      const a = accounts[sub];
      if (!a) return undefined;
      return { accountId: sub, claims: async () => ({ sub, ...(a.email !== undefined ? { email: a.email } : {}), ...(a.email_verified !== undefined ? { email_verified: a.email_verified } : {}) }) };
    },
    // first-party client: no consent screen
    async loadExistingGrant(ctx: any) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid email');
      await grant.save();
      return grant;
    },
  });
  const oidcCallback = provider.callback();

  handler = async (req, res) => {
    const m = /^\/interaction\/([^/?]+)(\/login)?/.exec(req.url ?? '');
    if (!m) return oidcCallback(req, res);
    try {
      if (!m[2]) {
        const d = await provider.interactionDetails(req, res);
        res.setHeader('Content-Type', 'text/html');
        return res.end(`<!doctype html><title>Test IdP</title><form method="post" action="/interaction/${d.uid}/login"><input name="account"><button>Sign in</button></form>`);
      }
      let body = '';
      for await (const chunk of req) body += chunk;
      const account = new URLSearchParams(body).get('account') ?? '';
      if (account === 'deny') {
        return await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the user cancelled' }, { mergeWithLastSubmission: false });
      }
      if (!accounts[account]) return res.writeHead(400).end('unknown test account');
      await provider.interactionFinished(req, res, { login: { accountId: account, amr: accounts[account].amr ?? ['pwd'] } }, { mergeWithLastSubmission: false });
    } catch (e) {
      res.writeHead(500).end(String((e as Error).message));
    }
  };

  return {
    issuer,
    clientId,
    clientSecret,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
