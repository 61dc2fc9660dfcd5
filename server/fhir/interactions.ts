/**
 * The FHIR REST interactions on one tenant, independent of express so that batch and
 * transaction Bundles run exactly the same code as single requests.
 */
import type { Bundle, BundleEntry, FhirResource as Resource } from 'fhir/r4';
import { applyPatch, JsonPatchError, Operation, validate as validatePatch } from 'fast-json-patch';
import { operationsFor, registry } from '../../resources';
import { inTenant, inTenantRead, localSettings, Tx, TxOptions } from '../db/tenant-tx';
import { fastRead } from '../store/fast-read';
import { history } from '../store/history';
import { store, StoredVersion, WriteResult } from '../store/resource-store';
import { hasWriteHook, writes } from './writes';
import { parseCount, resolveConditions, search } from '../search/search';
import { QueryInput } from '../search/params';
import { AccessDenied, badRequest, FhirError, gone, info, notFound, notSupported, outcome, preconditionFailed } from './errors';
import { etagOf, httpDate, parseEtag } from './etag';
import type { FhirRequest, FhirResponse, TenantContext } from './types';
import { assertValid, issuesOf, toOutcomeIssues } from './validate';
import { capabilityJson } from '../../capability/capability-statement';
import { parseElements, parseSummary, shape } from './shape';
import { assertInteraction, assertNotHidden, assertVisible, assertWritable, Granted, permit, restricted, restrictionSql, visibleIds } from './authorize';
import type { SqlFragment } from '../search/query';

const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;

export function run<T>(ctx: TenantContext, fn: (tx: Tx) => Promise<T>, opts: TxOptions = {}): Promise<T> {
  if (!ctx.tx) return inTenant(ctx.db, ctx.tenant, fn, opts);
  const tx = ctx.tx;
  const settings = localSettings(opts);
  return settings ? tx.raw(settings).then(() => fn(tx)) : fn(tx);
}

/** Read-only work: a read session outside Bundles (see inTenantRead), else as run(). */
export function runRead<T>(ctx: TenantContext, fn: (tx: Tx) => Promise<T>, opts: TxOptions = {}): Promise<T> {
  return ctx.tx ? run(ctx, fn, opts) : inTenantRead(ctx.db, ctx.tenant, fn, opts);
}

export function knownType(type: string) {
  const def = registry.get(type);
  if (!def) throw notFound(`Resource type "${type}" is not known to this server`);
  return def;
}

function checkId(id: string): void {
  if (!ID_RE.test(id)) throw badRequest(`"${id}" is not a valid FHIR id ([A-Za-z0-9-.]{1,64})`);
}

function versionHeaders(type: string, id: string, version: number, lastUpdated: Date, ctx: TenantContext): Record<string, string> {
  return {
    ETag: etagOf(version),
    'Last-Modified': httpDate(lastUpdated),
    'Content-Location': `${ctx.baseUrl}/${type}/${id}/_history/${version}`,
  };
}

type ReturnPref = 'minimal' | 'representation' | 'OperationOutcome';

function returnPreference(req: FhirRequest): ReturnPref {
  const m = /return=(minimal|representation|OperationOutcome)/.exec(req.headers.prefer ?? '');
  return (m?.[1] as ReturnPref) ?? 'representation';
}

export function writeResponse(req: FhirRequest, ctx: TenantContext, w: WriteResult, status: number, message: string): FhirResponse {
  const headers = versionHeaders(w.type, w.id, w.version, w.lastUpdated, ctx);
  if (status === 201) headers.Location = `${ctx.baseUrl}/${w.type}/${w.id}/_history/${w.version}`;
  const pref = returnPreference(req);
  if (pref === 'minimal') return { status, headers };
  if (pref === 'OperationOutcome') return { status, headers, body: info(message) };
  return { status, headers, body: w.resource };
}

function readResponse(req: FhirRequest, ctx: TenantContext, v: StoredVersion): FhirResponse {
  const headers = versionHeaders(v.type, v.id, v.version, v.lastUpdated, ctx);
  delete headers['Content-Location'];
  const inm = req.headers.ifNoneMatch;
  if (inm && inm.split(',').some((t) => t.trim() === '*' || parseEtagSafe(t) === v.version)) {
    return { status: 304, headers };
  }
  const ims = req.headers.ifModifiedSince ? Date.parse(req.headers.ifModifiedSince) : NaN;
  if (!Number.isNaN(ims) && Math.floor(v.lastUpdated.getTime() / 1000) * 1000 <= ims) return { status: 304, headers };
  const summary = parseSummary(get(req.query, '_summary'));
  const elements = parseElements(get(req.query, '_elements'));
  if (summary || elements) return { status: 200, headers, body: shape(JSON.parse(v.json!), summary, elements) };
  return { status: 200, headers, json: v.json! };
}

function parseEtagSafe(t: string): number | undefined {
  try {
    return parseEtag(t, 'If-None-Match');
  } catch {
    return undefined;
  }
}

export const get = (q: QueryInput, k: string) => q.find(([key]) => key === k)?.[1];

export function bodyResource(req: FhirRequest, type: string): Resource {
  if (req.body === undefined) throw badRequest(`A ${type} resource is required in the request body`);
  return assertValid(req.body, type);
}

function ifMatchOf(req: FhirRequest, ctx: TenantContext, interaction: string): number | undefined {
  if (req.headers.ifMatch) return parseEtag(req.headers.ifMatch);
  if (ctx.settings.requireIfMatch) {
    // R4 (http.html, version-aware updates): a server that requires If-Match rejects a request
    // without it with 400 Bad Request. The issue asked for 428; we follow the specification.
    throw FhirError.of(400, 'required', `This server requires If-Match on ${interaction} (send the ETag you read, e.g. If-Match: W/"3")`);
  }
  return undefined;
}

/** Resolves a conditional query (conditional create/update/patch/delete) to matching ids. */
export async function conditionalMatches(
  tx: Tx,
  ctx: TenantContext,
  type: string,
  query: QueryInput,
  limit: number,
  decision?: Granted,
): Promise<string[]> {
  const criteria = query.filter(([k]) => !k.startsWith('_') || k === '_id' || k === '_lastUpdated' || k === '_tag' || k === '_profile' || k === '_security');
  if (!criteria.length) throw badRequest('A conditional interaction needs at least one search criterion');
  const { conds } = await resolveConditions(tx, type, criteria, ctx.baseUrl, true);
  const limitTo = await restrictionSql(tx, ctx, type, decision);
  if (limitTo) conds.push(limitTo);
  const rows = await tx.raw(
    `SELECT r.id FROM resources r WHERE r.tenant_id = ? AND r.res_type = ? AND r.deleted = false
       ${conds.map((c) => `AND (${c.sql})`).join(' ')} LIMIT ?`,
    [tx.tenant, type, ...conds.flatMap((c) => c.bindings), limit],
  );
  return (rows.rows as Array<{ id: string }>).map((r) => r.id);
}

// ---- interactions --------------------------------------------------------------------------

async function read(ctx: TenantContext, req: FhirRequest, type: string, id: string): Promise<FhirResponse> {
  knownType(type);
  checkId(id);
  const d = permit(ctx, type, 'r');
  const v = restricted(d)
    ? await run(ctx, async (tx) => {
        const found = await store.read(tx, type, id);
        if (found) await assertVisible(tx, ctx, type, id, d);
        return found;
      })
    : ctx.tx
      ? await store.read(ctx.tx, type, id)
      : await fastRead(ctx.db, ctx.tenant, type, id);
  if (!v) throw notFound(`${type}/${id} is not known`);
  if (v.deleted) {
    const e = gone(`${type}/${id} was deleted`);
    Object.assign(e.headers, { ETag: etagOf(v.version), 'Last-Modified': httpDate(v.lastUpdated) });
    throw e;
  }
  return readResponse(req, ctx, v);
}

async function vread(ctx: TenantContext, req: FhirRequest, type: string, id: string, vid: string): Promise<FhirResponse> {
  knownType(type);
  checkId(id);
  if (!/^\d+$/.test(vid)) throw notFound(`Version "${vid}" of ${type}/${id} is not known`);
  const d = permit(ctx, type, 'r');
  const v = await run(ctx, async (tx) => {
    const found = await store.vread(tx, type, id, Number(vid));
    if (found) await assertVisible(tx, ctx, type, id, d);
    return found;
  });
  if (!v) throw notFound(`Version ${vid} of ${type}/${id} is not known`);
  if (v.deleted) throw gone(`Version ${vid} of ${type}/${id} is a deletion`);
  return readResponse(req, ctx, v);
}

async function create(ctx: TenantContext, req: FhirRequest, type: string): Promise<FhirResponse> {
  knownType(type);
  assertInteraction(type, 'create');
  const d = permit(ctx, type, 'c');
  const resource = bodyResource(req, type);
  if (!ctx.tx && !req.headers.ifNoneExist && !req.assignedId && !restricted(d) && !hasWriteHook(type)) {
    // The common case, a plain create: one statement, one round trip.
    const w = await store.createStandalone(ctx.db, ctx.tenant, resource, { baseUrl: ctx.baseUrl });
    return writeResponse(req, ctx, w, 201, `Created ${type}/${w.id}`);
  }
  return run(ctx, async (tx) => {
    if (req.headers.ifNoneExist) {
      const q = [...new URLSearchParams(req.headers.ifNoneExist.replace(/^[A-Za-z]+\?/, '')).entries()];
      const ids = await conditionalMatches(tx, ctx, type, q, 2, d);
      if (ids.length > 1) throw FhirError.of(412, 'multiple-matches', `If-None-Exist matched ${ids.length} or more ${type} resources`);
      if (ids.length === 1) {
        const v = await store.readCurrent(tx, type, ids[0]);
        const w: WriteResult = { ...v, created: false, resource: JSON.parse(v.json!) };
        return writeResponse(req, ctx, w, 200, `${type}/${v.id} already exists (If-None-Exist); nothing was created`);
      }
    }
    const w = await writes.create(tx, ctx, resource, { baseUrl: ctx.baseUrl, id: req.assignedId });
    await assertWritable(tx, ctx, type, w.id, d);
    return writeResponse(req, ctx, w, 201, `Created ${type}/${w.id}`);
  });
}

async function update(ctx: TenantContext, req: FhirRequest, type: string, id: string): Promise<FhirResponse> {
  knownType(type);
  checkId(id);
  // authorization first: a client that may not write learns nothing about the body's validity
  assertInteraction(type, 'update');
  const d = permit(ctx, type, 'u');
  const resource = bodyResource(req, type);
  if (resource.id === undefined) throw badRequest(`The ${type} in the body needs "id": "${id}" to match the URL`, [`${type}.id`]);
  if (resource.id !== id) throw badRequest(`The body id "${resource.id}" does not match the URL id "${id}"`, [`${type}.id`]);
  const ifMatch = ifMatchOf(req, ctx, 'update');
  return run(ctx, async (tx) => {
    await assertNotHidden(tx, ctx, type, id, d);
    const w = await writes.update(tx, ctx, resource, id, { ifMatch, baseUrl: ctx.baseUrl });
    await assertWritable(tx, ctx, type, id, d);
    return writeResponse(req, ctx, w, w.created ? 201 : 200, w.created ? `Created ${type}/${id}` : `Updated ${type}/${id}`);
  });
}

async function conditionalUpdate(ctx: TenantContext, req: FhirRequest, type: string): Promise<FhirResponse> {
  knownType(type);
  assertInteraction(type, 'update');
  const d = permit(ctx, type, 'u');
  const resource = bodyResource(req, type);
  return run(ctx, async (tx) => {
    const out = await conditionalUpdateIn(tx, ctx, req, type, resource, d);
    await assertWritable(tx, ctx, type, out.id, d);
    return out.response;
  });
}

async function conditionalUpdateIn(
  tx: Tx,
  ctx: TenantContext,
  req: FhirRequest,
  type: string,
  resource: Resource,
  d: Granted | undefined,
): Promise<{ id: string; response: FhirResponse }> {
  const ids = await conditionalMatches(tx, ctx, type, req.query, 2, d);
  if (ids.length > 1) throw FhirError.of(412, 'multiple-matches', `The conditional update matched more than one ${type}`);
  if (ids.length === 1) {
    if (resource.id && resource.id !== ids[0]) {
      throw badRequest(`The body id "${resource.id}" differs from the matched ${type}/${ids[0]}`, [`${type}.id`]);
    }
    const ifMatch = req.headers.ifMatch ? parseEtag(req.headers.ifMatch) : undefined;
    const w = await writes.update(tx, ctx, { ...resource, id: ids[0] } as Resource, ids[0], { ifMatch, baseUrl: ctx.baseUrl });
    return { id: w.id, response: writeResponse(req, ctx, w, 200, `Updated ${type}/${ids[0]}`) };
  }
  if (resource.id) {
    checkId(resource.id);
    await assertNotHidden(tx, ctx, type, resource.id, d);
    const w = await writes.update(tx, ctx, resource, resource.id, { baseUrl: ctx.baseUrl });
    return { id: w.id, response: writeResponse(req, ctx, w, w.created ? 201 : 200, `Created ${type}/${resource.id}`) };
  }
  const w = await writes.create(tx, ctx, resource, { baseUrl: ctx.baseUrl });
  return { id: w.id, response: writeResponse(req, ctx, w, 201, `Created ${type}/${w.id}`) };
}

function patchOps(req: FhirRequest): Operation[] {
  const ct = (req.headers.contentType ?? '').split(';')[0].trim().toLowerCase();
  if (ct !== 'application/json-patch+json') {
    throw FhirError.of(415, 'not-supported', `PATCH needs Content-Type application/json-patch+json (JSON Patch, RFC 6902), not "${ct || 'none'}"`);
  }
  const ops = req.body;
  if (!Array.isArray(ops)) throw badRequest('A JSON Patch body must be an array of operations');
  const err = validatePatch(ops as Operation[]);
  if (err) throw badRequest(`Invalid JSON Patch: ${err.message.split('\n')[0]}`);
  return ops as Operation[];
}

async function patchOne(ctx: TenantContext, req: FhirRequest, tx: Tx, type: string, id: string, ops: Operation[], d: Granted | undefined): Promise<FhirResponse> {
  const ifMatch = ifMatchOf(req, ctx, 'patch');
  await assertNotHidden(tx, ctx, type, id, d);
  const current = await store.readCurrent(tx, type, id);
  if (ifMatch !== undefined && ifMatch !== current.version) {
    throw preconditionFailed(`Version conflict on ${type}/${id}: If-Match W/"${ifMatch}" but the current version is W/"${current.version}"`);
  }
  let patched: Resource;
  try {
    patched = applyPatch(JSON.parse(current.json!), ops, true, false).newDocument as Resource;
  } catch (e) {
    const msg = e instanceof JsonPatchError ? e.message.split('\n')[0] : String(e);
    const status = e instanceof JsonPatchError && e.name === 'TEST_OPERATION_FAILED' ? 422 : 422;
    throw FhirError.of(status, 'processing', `JSON Patch could not be applied: ${msg}`);
  }
  if (!patched || typeof patched !== 'object' || patched.resourceType !== type || patched.id !== id) {
    throw FhirError.of(422, 'processing', `A patch may not change resourceType or id`);
  }
  assertValid(patched, type);
  const w = await writes.update(tx, ctx, patched, id, { ifMatch: current.version, baseUrl: ctx.baseUrl, method: 'PATCH' });
  await assertWritable(tx, ctx, type, id, d);
  return writeResponse(req, ctx, w, 200, `Patched ${type}/${id}`);
}

async function patch(ctx: TenantContext, req: FhirRequest, type: string, id?: string): Promise<FhirResponse> {
  knownType(type);
  if (id) checkId(id);
  assertInteraction(type, 'patch');
  const d = permit(ctx, type, 'u');
  const ops = patchOps(req);
  return run(ctx, async (tx) => {
    if (id) return patchOne(ctx, req, tx, type, id, ops, d);
    const ids = await conditionalMatches(tx, ctx, type, req.query, 2, d);
    if (ids.length === 0) throw notFound(`The conditional patch matched no ${type}`);
    if (ids.length > 1) throw FhirError.of(412, 'multiple-matches', `The conditional patch matched more than one ${type}`);
    return patchOne(ctx, req, tx, type, ids[0], ops, d);
  });
}

async function remove(ctx: TenantContext, req: FhirRequest, type: string, id: string): Promise<FhirResponse> {
  knownType(type);
  assertInteraction(type, 'delete');
  checkId(id);
  const d = permit(ctx, type, 'd');
  const ifMatch = req.headers.ifMatch ? parseEtag(req.headers.ifMatch) : undefined;
  return run(ctx, async (tx): Promise<FhirResponse> => {
    await assertNotHidden(tx, ctx, type, id, d);
    const w = await writes.delete(tx, ctx, type, id, { ifMatch });
    if (!w) return { status: 200, headers: {}, body: info(`${type}/${id} does not exist or was already deleted; nothing to do`) };
    return { status: 200, headers: { ETag: etagOf(w.version) }, body: info(`Deleted ${type}/${id} (version ${w.version})`) };
  });
}

const MAX_CONDITIONAL_DELETE = 100;

async function conditionalDelete(ctx: TenantContext, req: FhirRequest, type: string): Promise<FhirResponse> {
  knownType(type);
  assertInteraction(type, 'delete');
  const d = permit(ctx, type, 'd');
  return run(ctx, async (tx) => {
    const ids = await conditionalMatches(tx, ctx, type, req.query, MAX_CONDITIONAL_DELETE + 1, d);
    if (ids.length > MAX_CONDITIONAL_DELETE) {
      throw FhirError.of(412, 'multiple-matches', `The conditional delete matched more than ${MAX_CONDITIONAL_DELETE} ${type} resources; narrow the criteria`);
    }
    for (const id of ids) await writes.delete(tx, ctx, type, id);
    return { status: 200, headers: {}, body: info(`Deleted ${ids.length} ${type} resource(s)`) };
  });
}

function selfLink(ctx: TenantContext, path: string, params: QueryInput): string {
  const qs = new URLSearchParams(params).toString();
  return `${ctx.baseUrl}${path}${qs ? '?' + qs : ''}`;
}

/** The types a search may cover for this token and the condition confining them. */
async function searchScope(tx: Tx, ctx: TenantContext, type: string | undefined, types: string[] | undefined, explicit: boolean) {
  if (type) return { types, restrict: await restrictionSql(tx, ctx, type, permit(ctx, type, 's')) };
  if (!ctx.access) return { types };
  const kept: string[] = [];
  const pieces: SqlFragment[] = [];
  let anyRestricted = false;
  for (const t of types!) {
    const d = ctx.access.decide(t, 's');
    if (!d.allow) {
      if (explicit) permit(ctx, t, 's'); // throws the 403 with its reason
      continue;
    }
    kept.push(t);
    const r = await restrictionSql(tx, ctx, t, d);
    if (r) anyRestricted = true;
    pieces.push(r ? { sql: `(r.res_type = ? AND (${r.sql}))`, bindings: [t, ...r.bindings] } : { sql: `r.res_type = ?`, bindings: [t] });
  }
  if (!kept.length) permit(ctx, types![0], 's');
  return {
    types: kept,
    restrict: anyRestricted ? { sql: pieces.map((p) => p.sql).join(' OR '), bindings: pieces.flatMap((p) => p.bindings) } : undefined,
  };
}

/** _include/_revinclude results the token may not read are left out (never a side door). */
async function visibleIncluded(tx: Tx, ctx: TenantContext, included: Array<{ type: string; id: string; json: string }>) {
  if (!ctx.access || !included.length) return included;
  const byType = new Map<string, string[]>();
  for (const m of included) {
    const ids = byType.get(m.type);
    if (ids) ids.push(m.id);
    else byType.set(m.type, [m.id]);
  }
  const keep = new Set<string>();
  for (const [t, ids] of byType) {
    const d = ctx.access.decide(t, 'r');
    if (!d.allow) continue;
    for (const id of await visibleIds(tx, ctx, t, ids, d)) keep.add(`${t}/${id}`);
  }
  return included.filter((m) => keep.has(`${m.type}/${m.id}`));
}

async function searchType(ctx: TenantContext, req: FhirRequest, type?: string): Promise<FhirResponse> {
  if (type) knownType(type);
  const strict = /handling=strict/.test(req.headers.prefer ?? '');
  const summary = parseSummary(get(req.query, '_summary'));
  const elements = parseElements(get(req.query, '_elements'));
  let types: string[] | undefined;
  if (!type) {
    types = (get(req.query, '_type') ?? '').split(',').map((t) => t.trim()).filter(Boolean);
    for (const t of types) knownType(t);
    if (!types.length) types = [...registry.keys()];
  }
  const explicitTypes = !type && !!get(req.query, '_type');
  // A search that runs away (an unlucky plan, a huge chain) is stopped and answered 503 (timeout)
  // rather than holding a connection and a core (SEARCH_TIMEOUT_MS; 0 = no limit).
  const res = await runRead(ctx, async (tx) => {
    const scope = await searchScope(tx, ctx, type, types, explicitTypes);
    const r = await search(tx, {
      type: type ?? scope.types![0],
      types: scope.types,
      params: req.query,
      baseUrl: ctx.baseUrl,
      strict,
      defaultCount: ctx.config.defaultCount,
      maxCount: ctx.config.maxCount,
      restrict: scope.restrict,
    });
    r.included = await visibleIncluded(tx, ctx, r.included);
    return r;
  }, { statementTimeoutMs: ctx.config.searchTimeoutMs });
  const shaping: QueryInput = req.query.filter(([k]) => ['_count', '_summary', '_elements', '_total', ...(type ? [] : ['_type'])].includes(k));
  const used = [...res.applied, ...shaping];
  const path = type ? `/${type}` : '';
  const bundle: Bundle = {
    resourceType: 'Bundle',
    type: 'searchset',
    ...(res.total !== undefined ? { total: res.total } : {}),
    link: [{ relation: 'self', url: selfLink(ctx, path, used) }],
  };
  if (res.nextCursor) bundle.link!.push({ relation: 'next', url: selfLink(ctx, path, [...used, ['_cursor', res.nextCursor]]) });
  const warning = res.warnings.length ? [{ resource: outcome(res.warnings), search: { mode: 'outcome' as const } }] : [];
  if (!summary && !elements) {
    // The stored JSON text goes into the Bundle as it is: no parse and re-serialise per resource
    // (the largest server cost of big pages).
    const entryText = (m: { type: string; id: string; json: string }, mode: 'match' | 'include') =>
      `{"fullUrl":${JSON.stringify(`${ctx.baseUrl}/${m.type}/${m.id}`)},"resource":${m.json},"search":{"mode":"${mode}"}}`;
    const texts = [...res.matches.map((m) => entryText(m, 'match')), ...res.included.map((m) => entryText(m, 'include')), ...warning.map((w) => JSON.stringify(w))];
    const head = JSON.stringify(bundle);
    const json = texts.length ? `${head.slice(0, -1)},"entry":[${texts.join(',')}]}` : head;
    return { status: 200, headers: {}, json };
  }
  const entry = (m: { type: string; id: string; json: string }, mode: 'match' | 'include'): BundleEntry => {
    const r = JSON.parse(m.json) as Resource;
    const shaped = mode === 'match' ? shape(r, summary, elements) : r;
    return { fullUrl: `${ctx.baseUrl}/${m.type}/${m.id}`, resource: shaped, search: { mode } };
  };
  const entries: BundleEntry[] = [...res.matches.map((m) => entry(m, 'match')), ...res.included.map((m) => entry(m, 'include')), ...warning];
  if (entries.length) bundle.entry = entries;
  return { status: 200, headers: {}, body: bundle };
}

async function historyBundle(ctx: TenantContext, req: FhirRequest, type?: string, id?: string): Promise<FhirResponse> {
  if (type) knownType(type);
  if (id) checkId(id);
  for (const k of ['_count', '_since', '_at']) {
    if (req.query.filter(([key]) => key === k).length > 1) throw badRequest(`${k} may appear at most once`, [k]);
  }
  const count = parseCount(get(req.query, '_count'), ctx.config.defaultCount, ctx.config.maxCount);
  const since = get(req.query, '_since');
  const at = get(req.query, '_at');
  const before = get(req.query, '_before');
  if (ctx.access && !id) {
    // History across resources cannot be confined to a compartment page by page: it needs
    // unrestricted read access to the type (or to every type).
    for (const t of type ? [type] : [...registry.keys()]) {
      const d = permit(ctx, t, 'r');
      if (restricted(d)) {
        throw AccessDenied.forbidden(`History of ${type ? 'all ' + type + ' resources' : 'the whole server'} needs unrestricted read access; this token is confined to a subset (search, or read one resource's history)`);
      }
    }
  }
  const d = id ? permit(ctx, type!, 'r') : undefined;
  const h = await run(ctx, async (tx) => {
    if (type && id) {
      const exists = await store.read(tx, type, id);
      if (!exists) throw notFound(`${type}/${id} is not known`);
      await assertVisible(tx, ctx, type, id, d);
    }
    return history(tx, { type, id, since, at, count, before });
  });
  const path = `${type ? '/' + type : ''}${id ? '/' + id : ''}/_history`;
  const params: QueryInput = req.query.filter(([k]) => ['_count', '_since', '_at'].includes(k));
  const bundle: Bundle = {
    resourceType: 'Bundle',
    type: 'history',
    ...(h.total !== undefined ? { total: h.total } : {}),
    link: [{ relation: 'self', url: selfLink(ctx, path, req.query) }],
    entry: h.entries.map((e): BundleEntry => {
      const url = `${e.type}/${e.id}`;
      if (e.deleted) {
        return {
          fullUrl: `${ctx.baseUrl}/${url}`,
          request: { method: 'DELETE', url },
          response: { status: '204', etag: etagOf(e.version), lastModified: e.lastUpdated.toISOString() },
        };
      }
      const method = e.method === 'POST' ? 'POST' : 'PUT';
      return {
        fullUrl: `${ctx.baseUrl}/${url}`,
        resource: JSON.parse(e.json!),
        request: { method, url: method === 'POST' ? e.type : url },
        response: { status: e.version === 1 ? '201' : '200', etag: etagOf(e.version), lastModified: e.lastUpdated.toISOString() },
      };
    }),
  };
  if (h.next) bundle.link!.push({ relation: 'next', url: selfLink(ctx, path, [...params, ['_before', h.next]]) });
  if (!bundle.entry!.length) delete bundle.entry;
  return { status: 200, headers: {}, body: bundle };
}

// ---- operations ------------------------------------------------------------------------

function operationResource(req: FhirRequest): unknown {
  const b = req.body as Record<string, unknown> | undefined;
  if (b && b.resourceType === 'Parameters') {
    const p = (b.parameter as Array<Record<string, unknown>> | undefined)?.find((x) => x.name === 'resource');
    return p?.resource;
  }
  return b;
}

async function validateOp(ctx: TenantContext, req: FhirRequest, type: string, id?: string): Promise<FhirResponse> {
  knownType(type);
  let resource = operationResource(req);
  if (resource === undefined && id) {
    const d = permit(ctx, type, 'r');
    const v = await run(ctx, async (tx) => {
      const current = await store.readCurrent(tx, type, id);
      await assertVisible(tx, ctx, type, id, d);
      return current;
    });
    resource = JSON.parse(v.json!);
  } else if (ctx.access && !(['c', 'u'] as const).some((op) => ctx.access!.decide(type, op).allow)) {
    permit(ctx, type, 'c'); // validating a resource is for those who may write one
  }
  if (resource === undefined) throw badRequest('$validate needs a resource (in the body, or a Parameters "resource" parameter)');
  if (typeof resource !== 'object' || resource === null) throw badRequest('$validate: the resource must be a JSON object');
  const issues = toOutcomeIssues(issuesOf(resource, type));
  if (id && (resource as Resource).id !== undefined && (resource as Resource).id !== id) {
    issues.push({ severity: 'error', code: 'invalid', diagnostics: `The resource id does not match ${type}/${id}`, expression: [`${type}.id`] });
  }
  const body = issues.length
    ? outcome(issues)
    : outcome([{ severity: 'information', code: 'informational', diagnostics: 'Validation successful: no issues found' }]);
  return { status: 200, headers: {}, body };
}

async function restoreOp(ctx: TenantContext, req: FhirRequest, type: string, id: string): Promise<FhirResponse> {
  knownType(type);
  checkId(id);
  assertInteraction(type, 'update');
  const d = permit(ctx, type, 'u');
  return run(ctx, async (tx) => {
    const w = await writes.restore(tx, ctx, type, id, { baseUrl: ctx.baseUrl });
    await assertWritable(tx, ctx, type, id, d);
    return writeResponse(req, ctx, w, 200, `Restored ${type}/${id} as version ${w.version}`);
  });
}

async function operation(ctx: TenantContext, req: FhirRequest, op: string, type: string, id?: string): Promise<FhirResponse> {
  const name = op.slice(1);
  const level = id ? 'instance' : 'type';
  const def = operationsFor(type, level).find((o) => o.name === name);
  if (!def) throw notFound(`Operation ${op} is not defined at ${level} level for ${type}`);
  if (req.method === 'GET' && def.affectsState) throw notSupported(405, `${op} changes state; invoke it with POST`);
  if (def.handler) return def.handler({ ...ctx, operation: name }, req, { type, id });
  if (name === 'validate') return validateOp(ctx, req, type, id);
  if (name === 'restore') return restoreOp(ctx, req, type, id!);
  throw notSupported(501, `${op} is not implemented`);
}

// ---- dispatch --------------------------------------------------------------------------

export type BundleHandler = (ctx: TenantContext, req: FhirRequest) => Promise<FhirResponse>;
let bundleHandler: BundleHandler | undefined;
export function setBundleHandler(h: BundleHandler): void {
  bundleHandler = h;
}

export async function handle(ctx: TenantContext, req: FhirRequest): Promise<FhirResponse> {
  const s = req.segments;
  const m = req.method === 'HEAD' ? 'GET' : req.method;
  const [type, second, third, fourth] = s;
  if (s.length === 0) {
    if (m === 'POST') return bundleHandler!(ctx, req);
    if (m === 'GET') return searchType(ctx, req);
  }
  if (type === 'metadata' && s.length === 1 && m === 'GET') {
    return { status: 200, headers: {}, json: capabilityJson(ctx.baseUrl, ctx.settings) };
  }
  if (type === '_history' && s.length === 1 && m === 'GET') return historyBundle(ctx, req);
  if (type === '_search' && s.length === 1 && m === 'POST') return searchType(ctx, req);
  if (type && !registry.has(type)) throw notFound(`Resource type "${type}" is not known to this server`);
  if (s.length === 1) {
    if (m === 'GET') return searchType(ctx, req, type);
    if (m === 'POST') return create(ctx, req, type);
    if (m === 'PUT') return conditionalUpdate(ctx, req, type);
    if (m === 'PATCH') return patch(ctx, req, type);
    if (m === 'DELETE') return conditionalDelete(ctx, req, type);
  }
  if (s.length === 2) {
    if (second === '_search' && m === 'POST') return searchType(ctx, req, type);
    if (second === '_history' && m === 'GET') return historyBundle(ctx, req, type);
    if (second.startsWith('$')) return operation(ctx, req, second, type);
    if (m === 'GET') return read(ctx, req, type, second);
    if (m === 'PUT') return update(ctx, req, type, second);
    if (m === 'PATCH') return patch(ctx, req, type, second);
    if (m === 'DELETE') return remove(ctx, req, type, second);
  }
  if (s.length === 3) {
    if (third === '_history' && m === 'GET') return historyBundle(ctx, req, type, second);
    if (third.startsWith('$')) {
      checkId(second);
      return operation(ctx, req, third, type, second);
    }
  }
  if (s.length === 4 && third === '_history' && m === 'GET') return vread(ctx, req, type, second, fourth);
  throw notSupported(s.length <= 4 ? 405 : 404, `${req.method} /${s.join('/')} is not a FHIR interaction this server supports`);
}
