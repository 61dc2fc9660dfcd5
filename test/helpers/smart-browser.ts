/**
 * A scripted browser for the sign-in pages: follows redirects by hand, keeps cookies, fills forms.
 * Plus the SMART client side: PKCE, the authorize URL, the code exchange.
 */
import { createHash, randomBytes } from 'node:crypto';
import { totpCode } from '../../server/auth/totp';

export interface Page {
  status: number;
  url: string;
  html: string;
  location?: string;
  retryAfter?: string;
}

export class Browser {
  private jar = new Map<string, string>();
  constructor(readonly ip = '10.9.0.1') {}

  async request(url: string, init: { method?: string; form?: Record<string, string> } = {}): Promise<Page> {
    const headers: Record<string, string> = { 'X-Forwarded-For': this.ip };
    if (this.jar.size) headers.Cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    let body: string | undefined;
    if (init.form) {
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(init.form).toString();
    }
    const res = await fetch(url, { method: init.method ?? (body ? 'POST' : 'GET'), headers, body, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i).trim();
      const value = pair.slice(i + 1).trim();
      const expired = attrs.some((a) => /^\s*expires=Thu, 01 Jan 1970/i.test(a)) || attrs.some((a) => /^\s*max-age=0/i.test(a));
      if (expired || !value) this.jar.delete(name);
      else this.jar.set(name, value);
    }
    const location = res.headers.get('location') ?? undefined;
    const retryAfter = res.headers.get('retry-after') ?? undefined;
    return { status: res.status, url, html: await res.text(), location: location ? new URL(location, url).href : undefined, ...(retryAfter ? { retryAfter } : {}) };
  }

  /** Follows redirects until a page (non-3xx) or a URL starting with `stopAt`. */
  async go(url: string, stopAt: string, init: { form?: Record<string, string> } = {}): Promise<Page> {
    let p = await this.request(url, init);
    for (let i = 0; i < 20 && p.status >= 300 && p.status < 400 && p.location; i++) {
      if (p.location.startsWith(stopAt)) return p;
      p = await this.request(p.location);
    }
    return p;
  }

  /** Submits the form whose action ends with `/step` on the page. */
  async submit(page: Page, step: string, fields: Record<string, string>, stopAt: string): Promise<Page> {
    const m = new RegExp(`action="([^"]*/${step})"`).exec(page.html);
    if (!m) throw new Error(`no ${step} form on page ${page.url} (${page.status}): ${page.html.slice(0, 400)}`);
    return this.go(new URL(m[1].replace(/&amp;/g, '&'), page.url).href, stopAt, { form: fields });
  }
}

export function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

export function authorizeUrl(issuer: string, p: Record<string, string | undefined>): string {
  const u = new URL(`${issuer}/authorize`);
  for (const [k, v] of Object.entries(p)) if (v !== undefined) u.searchParams.set(k, v);
  return u.href;
}

export async function tokenRequest(issuer: string, form: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form).toString(),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
}

/** Staff sign-in from the login page: password, then TOTP (enrolling when the page shows a key). */
export async function staffSignIn(b: Browser, login: Page, email: string, password: string, stopAt: string, totpSecret?: string): Promise<Page> {
  const totp = await b.submit(login, 'login', { email, password }, stopAt);
  const key = /Key: <code>([A-Z2-7]+)<\/code>/.exec(totp.html)?.[1] ?? totpSecret;
  if (!key) throw new Error(`no TOTP step: ${totp.status} ${totp.html.slice(0, 300)}`);
  return b.submit(totp, 'totp', { code: totpCode(key) }, stopAt);
}
