/** Small helpers shared by the REST interaction tests (not a test file itself). */
import { randomBytes } from 'node:crypto';
import type { TestServer } from './helpers/test-server';
import { FHIR_JSON } from './helpers/test-server';

/** A short random token so every test can use identifiers nobody else uses. */
export const uniq = (prefix = 'x') => `${prefix}-${randomBytes(4).toString('hex')}`;

export function patientWith(system: string, value: string, extra: Record<string, unknown> = {}) {
  return { resourceType: 'Patient', identifier: [{ system, value }], active: true, name: [{ family: 'Tester' }], ...extra };
}

export async function create(s: TestServer, resource: Record<string, unknown>, base = s.base) {
  const res = await s.http.post(`${base}/${resource.resourceType}`).set('Content-Type', FHIR_JSON).send(resource);
  if (res.status !== 201) throw new Error(`create failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body as { id: string; meta: { versionId: string; lastUpdated: string }; [k: string]: unknown };
}

/** Asserts a body is an OperationOutcome with at least one issue carrying severity and code. */
export function expectOutcome(body: unknown, code?: string) {
  const b = body as { resourceType?: string; issue?: Array<{ severity?: string; code?: string }> };
  expect(b.resourceType).toBe('OperationOutcome');
  expect(Array.isArray(b.issue) && b.issue.length).toBeTruthy();
  for (const i of b.issue!) {
    expect(typeof i.severity).toBe('string');
    expect(typeof i.code).toBe('string');
  }
  if (code) expect(b.issue!.map((i) => i.code)).toContain(code);
}

/** Ids of the match entries of a searchset Bundle. */
export function matchIds(bundle: { entry?: Array<{ resource?: { id?: string }; search?: { mode?: string } }> }): string[] {
  return (bundle.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource!.id!);
}

/** Turns an absolute next-link URL into a path supertest can GET. */
export function pathOf(url: string): string {
  const u = new URL(url);
  return u.pathname + u.search;
}

export function link(bundle: { link?: Array<{ relation: string; url: string }> }, rel: string): string | undefined {
  return bundle.link?.find((l) => l.relation === rel)?.url;
}

/** Follows next links from a first page, returning the match ids of every page and the page count. */
export async function followPages(s: TestServer, firstPath: string, maxPages = 50) {
  const ids: string[] = [];
  const pages: Array<Record<string, unknown>> = [];
  let path: string | undefined = firstPath;
  while (path) {
    const res = await s.http.get(path);
    expect(res.status).toBe(200);
    pages.push(res.body);
    ids.push(...matchIds(res.body));
    const next = link(res.body, 'next');
    path = next ? pathOf(next) : undefined;
    if (pages.length > maxPages) throw new Error('too many pages');
  }
  return { ids, pages };
}

export { FHIR_JSON };
