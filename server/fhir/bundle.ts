/**
 * batch and transaction Bundles at the tenant base. A transaction runs every entry in one
 * database transaction (all-or-nothing) in the order the spec requires (DELETE, POST, PUT/PATCH,
 * GET), with urn:uuid and conditional references resolved; batch entries succeed or fail alone.
 */
import { randomUUID } from 'node:crypto';
import type { Bundle, BundleEntry, BundleEntryResponse, FhirResource as Resource } from 'fhir/r4';
import { registry } from '../../resources';
import type { Tx } from '../db/tenant-tx';
import { AccessDenied, badRequest, FhirError } from './errors';
import { writes } from './writes';
import { bodyResource, conditionalMatches, handle, knownType, run, setBundleHandler, writeResponse } from './interactions';
import type { FhirRequest, FhirResponse, TenantContext } from './types';
import { errorToResponse } from './error-response';
import { rewriteResource } from './reference-rewrite';
import { assertInteraction, assertWritable, permit } from './authorize';

const ORDER: Record<string, number> = { DELETE: 0, POST: 1, PUT: 2, PATCH: 2, GET: 3, HEAD: 3 };
const STATUS_TEXT: Record<number, string> = {
  200: 'OK', 201: 'Created', 204: 'No Content', 304: 'Not Modified', 400: 'Bad Request', 404: 'Not Found',
  405: 'Method Not Allowed', 409: 'Conflict', 410: 'Gone', 412: 'Precondition Failed', 422: 'Unprocessable Entity',
  428: 'Precondition Required', 500: 'Internal Server Error',
};

interface ParsedEntry {
  index: number;
  entry: BundleEntry;
  method: FhirRequest['method'];
  segments: string[];
  query: Array<[string, string]>;
}

function parseEntry(ctx: TenantContext, entry: BundleEntry, index: number): ParsedEntry {
  if (!entry || typeof entry !== 'object' || Array.isArray(entry)) {
    throw badRequest(`Bundle.entry[${index}] must be an object`, [`Bundle.entry[${index}]`]);
  }
  const req = entry.request;
  if (!req?.method || !req.url) throw badRequest(`Bundle.entry[${index}].request needs method and url`, [`Bundle.entry[${index}].request`]);
  const method = req.method as FhirRequest['method'];
  if (!ORDER.hasOwnProperty(method)) throw badRequest(`Bundle.entry[${index}].request.method ${method} is not supported`);
  let url = req.url;
  if (url.startsWith(ctx.baseUrl + '/')) url = url.slice(ctx.baseUrl.length + 1);
  if (/^[a-z]+:\/\//i.test(url)) throw badRequest(`Bundle.entry[${index}].request.url must be relative to this server's base: ${url}`);
  const [path, qs = ''] = url.split('?', 2);
  const segments = path.split('/').filter(Boolean);
  const query = [...new URLSearchParams(qs).entries()];
  return { index, entry, method, segments, query };
}

function toRequest(p: ParsedEntry, body: unknown, prefer?: string): FhirRequest {
  const r = p.entry.request!;
  return {
    method: p.method,
    segments: p.segments,
    query: p.query,
    headers: {
      ifMatch: r.ifMatch,
      ifNoneMatch: r.ifNoneMatch,
      ifModifiedSince: r.ifModifiedSince,
      ifNoneExist: r.ifNoneExist,
      prefer,
      contentType: p.method === 'PATCH' ? 'application/json-patch+json' : 'application/fhir+json',
    },
    body: p.method === 'PATCH' ? patchBody(p, body) : body,
  };
}

/** In a Bundle, a JSON Patch travels as a Binary (HAPI convention) holding the patch document. */
function patchBody(p: ParsedEntry, body: unknown): unknown {
  const b = body as Resource | undefined;
  if (b?.resourceType === 'Binary') {
    const data = (b as { data?: string }).data;
    try {
      return JSON.parse(Buffer.from(data ?? '', 'base64').toString('utf8'));
    } catch {
      throw badRequest(`Bundle.entry[${p.index}]: the Binary does not hold a JSON Patch document`);
    }
  }
  throw FhirError.of(415, 'not-supported', `Bundle.entry[${p.index}]: PATCH needs a Binary holding a JSON Patch document (FHIRPath Patch is not supported)`);
}

function entryResponse(ctx: TenantContext, res: FhirResponse, prefer?: string): BundleEntry {
  const response: BundleEntryResponse = { status: `${res.status} ${STATUS_TEXT[res.status] ?? ''}`.trim() };
  const h = res.headers;
  if (h.Location) response.location = h.Location.slice(ctx.baseUrl.length + 1);
  else if (h['Content-Location'] && res.status < 300) response.location = h['Content-Location'].slice(ctx.baseUrl.length + 1);
  if (h.ETag) response.etag = h.ETag;
  if (h['Last-Modified']) response.lastModified = new Date(h['Last-Modified']).toISOString();
  const out: BundleEntry = { response };
  const body = res.json ? JSON.parse(res.json) : res.body;
  if (body && typeof body === 'object') {
    const b = body as Resource;
    if (b.resourceType === 'OperationOutcome') {
      if (res.status >= 400 || /return=OperationOutcome/.test(prefer ?? '')) response.outcome = b;
    } else if (res.status < 300 && (/return=representation/.test(prefer ?? '') || ['Bundle'].includes(b.resourceType) || res.json)) {
      out.resource = b;
      if (b.id && registry.has(b.resourceType)) out.fullUrl = `${ctx.baseUrl}/${b.resourceType}/${b.id}`;
    }
  }
  return out;
}

type Json = unknown;

function collectReferences(value: Json, out: Set<string>): void {
  if (Array.isArray(value)) value.forEach((v) => collectReferences(v, out));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') out.add(v);
      else collectReferences(v, out);
    }
  }
}

/** Prefixes a FhirError's diagnostics with the entry it came from. */
function withEntry(e: unknown, p: ParsedEntry): unknown {
  if (!(e instanceof FhirError)) return e;
  const prefix = `Bundle.entry[${p.index}] (${p.method} ${p.entry.request!.url}): `;
  const Kind = e instanceof AccessDenied ? AccessDenied : FhirError;
  return new Kind(e.status, e.issues.map((i) => ({ ...i, diagnostics: prefix + (i.diagnostics ?? '') })), e.headers);
}

async function transaction(ctx: TenantContext, bundle: Bundle, prefer?: string): Promise<FhirResponse> {
  const entries = (bundle.entry ?? []).map((e, i) => parseEntry(ctx, e, i));
  return run(ctx, async (tx: Tx) => {
    const tctx: TenantContext = { ...ctx, tx };
    const map = new Map<string, string>();
    const preset = new Map<number, FhirResponse>(); // conditional creates that matched
    const assigned = new Map<number, string>();
    const identities = new Set<string>();
    const claim = (identity: string, i: number) => {
      if (identities.has(identity)) {
        throw badRequest(`Bundle.entry[${i}]: ${identity} appears more than once in this transaction`, [`Bundle.entry[${i}]`]);
      }
      identities.add(identity);
    };

    // 1. identities: ids for POSTs (or the existing match of a conditional create), PUT targets.
    for (const p of entries) {
      const type = p.segments[0];
      const fullUrl = p.entry.fullUrl;
      if (p.method === 'POST' && p.segments.length === 1) {
        let id: string | undefined;
        if (p.entry.request!.ifNoneExist) {
          const q = [...new URLSearchParams(p.entry.request!.ifNoneExist.replace(/^[A-Za-z]+\?/, '')).entries()];
          const ids = await conditionalMatches(tx, tctx, type, q, 2);
          if (ids.length > 1) throw FhirError.of(412, 'multiple-matches', `Bundle.entry[${p.index}]: ifNoneExist matched more than one ${type}`);
          if (ids.length === 1) {
            id = ids[0];
            preset.set(p.index, {
              status: 200,
              headers: { Location: `${ctx.baseUrl}/${type}/${id}` },
            });
          }
        }
        if (!id) {
          id = randomUUID();
          assigned.set(p.index, id);
        }
        claim(`${type}/${id}`, p.index);
        if (fullUrl) map.set(fullUrl, `${type}/${id}`);
      } else if (p.method === 'PUT' && p.segments.length === 2) {
        claim(`${type}/${p.segments[1]}`, p.index);
        if (fullUrl && fullUrl.startsWith('urn:')) map.set(fullUrl, `${type}/${p.segments[1]}`);
      } else if ((p.method === 'DELETE' || p.method === 'PATCH') && p.segments.length === 2) {
        claim(`${type}/${p.segments[1]}`, p.index);
      }
    }

    // 1b. conditional updates (PUT Type?query): resolve the target now, so that its identity takes
    // part in the overlap check and other entries can reference its fullUrl. The query may name
    // placeholders of other entries (e.g. subject=urn:uuid:...).
    const conditionalPut = new Map<number, string>();
    for (const p of entries) {
      if (p.method !== 'PUT' || p.segments.length !== 1) continue;
      const type = p.segments[0];
      if (!registry.has(type)) continue; // handle() reports the unknown type
      p.query = p.query.map(([k, v]) => [k, map.get(v) ?? v]);
      const ids = await conditionalMatches(tx, tctx, type, p.query, 2);
      if (ids.length > 1) throw FhirError.of(412, 'multiple-matches', `Bundle.entry[${p.index}]: the conditional update matched more than one ${type}`);
      const bodyId = (p.entry.resource as Resource | undefined)?.id;
      if (ids.length === 1 && bodyId && bodyId !== ids[0]) {
        throw badRequest(`Bundle.entry[${p.index}]: the body id "${bodyId}" differs from the matched ${type}/${ids[0]}`, [`Bundle.entry[${p.index}].resource.id`]);
      }
      const id = ids[0] ?? bodyId ?? randomUUID();
      conditionalPut.set(p.index, id);
      claim(`${type}/${id}`, p.index);
      if (p.entry.fullUrl) map.set(p.entry.fullUrl, `${type}/${id}`);
    }

    // 2. conditional references (Patient?identifier=...) must resolve to exactly one resource.
    const refs = new Set<string>();
    for (const p of entries) collectReferences(p.entry.resource, refs);
    for (const ref of refs) {
      if (ref.startsWith('urn:uuid:') || ref.startsWith('urn:oid:')) {
        if (!map.has(ref)) throw badRequest(`Reference ${ref} does not match any fullUrl in this transaction`);
        continue;
      }
      const m = /^([A-Z][A-Za-z]+)\?(.+)$/.exec(ref);
      if (!m) continue;
      if (!registry.has(m[1])) throw badRequest(`Conditional reference ${ref}: unknown type ${m[1]}`);
      const ids = await conditionalMatches(tx, tctx, m[1], [...new URLSearchParams(m[2]).entries()], 2, permit(tctx, m[1], 's'));
      if (ids.length !== 1) {
        throw FhirError.of(
          ids.length ? 412 : 400,
          ids.length ? 'multiple-matches' : 'not-found',
          `Conditional reference ${ref} matched ${ids.length ? 'more than one' : 'no'} resource; it must match exactly one`,
        );
      }
      map.set(ref, `${m[1]}/${ids[0]}`);
    }

    // 3. process in the order the spec requires; answer in request order.
    const responses = new Array<BundleEntry>(entries.length);
    const ordered = [...entries].sort((a, b) => ORDER[a.method] - ORDER[b.method] || a.index - b.index);
    // Plain creates (POST with a promised id) are validated one by one, then written together in
    // one statement when the first of them comes up.
    const plainCreates = ordered.filter((p) => p.method === 'POST' && p.segments.length === 1 && assigned.has(p.index) && !preset.has(p.index));
    const plainSet = new Set(plainCreates);
    let createsDone = false;
    for (const p of ordered) {
      if (plainSet.has(p)) {
        if (createsDone) continue;
        createsDone = true;
        const items = plainCreates.map((c) => {
          try {
            const type = c.segments[0];
            knownType(type);
            assertInteraction(type, 'create');
            permit(tctx, type, 'c');
            const body = c.entry.resource ? rewriteResource(c.entry.resource, map) : undefined;
            return { resource: bodyResource({ ...toRequest(c, body, prefer) }, type), id: assigned.get(c.index)! };
          } catch (e) {
            throw withEntry(e, c);
          }
        });
        const results = await writes.createMany(tx, tctx, items, { baseUrl: ctx.baseUrl });
        for (const [i, r] of results.entries()) {
          try {
            await assertWritable(tx, tctx, r.type, r.id, permit(tctx, r.type, 'c'));
          } catch (e) {
            throw withEntry(e, plainCreates[i]);
          }
        }
        plainCreates.forEach((c, i) => {
          const res = writeResponse(toRequest(c, undefined, prefer), ctx, results[i], 201, `Created ${results[i].type}/${results[i].id}`);
          responses[c.index] = entryResponse(ctx, res, prefer);
        });
        continue;
      }
      const pre = preset.get(p.index);
      let res: FhirResponse;
      try {
        if (pre) res = pre;
        else {
          const body = p.entry.resource ? rewriteResource(p.entry.resource, map) : undefined;
          const target = conditionalPut.get(p.index);
          // A resolved conditional update runs as a plain update of its target (create if new).
          const req = target
            ? toRequest({ ...p, segments: [p.segments[0], target], query: [] }, { ...(body as object), id: target }, prefer)
            : toRequest(p, body, prefer);
          req.assignedId = assigned.get(p.index);
          // (the tenant's requireIfMatch applies to direct updates only, as for a single conditional PUT)
          res = await handle(target ? { ...tctx, settings: { ...tctx.settings, requireIfMatch: false } } : tctx, req);
        }
      } catch (e) {
        throw withEntry(e, p);
      }
      responses[p.index] = entryResponse(ctx, res, prefer);
    }
    const out: Bundle = { resourceType: 'Bundle', type: 'transaction-response', entry: responses };
    if (!responses.length) delete out.entry;
    return { status: 200, headers: {}, body: out };
  });
}

async function batch(ctx: TenantContext, bundle: Bundle, prefer?: string): Promise<FhirResponse> {
  const responses: BundleEntry[] = [];
  const list = bundle.entry ?? [];
  const ordered = list.map((e, i) => ({ e, i }));
  for (const { e, i } of ordered) {
    try {
      const p = parseEntry(ctx, e, i);
      const req = toRequest(p, e.resource, prefer);
      // Inside an outer transaction (Idempotency-Key), each entry gets its own savepoint.
      const res = ctx.tx
        ? await ctx.tx.transaction((sp) => handle({ ...ctx, tx: sp }, req))
        : await handle(ctx, req);
      responses[i] = entryResponse(ctx, res, prefer);
    } catch (err) {
      responses[i] = entryResponse(ctx, errorToResponse(err), prefer);
    }
  }
  const out: Bundle = { resourceType: 'Bundle', type: 'batch-response', entry: responses };
  if (!responses.length) delete out.entry;
  return { status: 200, headers: {}, body: out };
}

export async function handleBundle(ctx: TenantContext, req: FhirRequest): Promise<FhirResponse> {
  const b = req.body as Bundle | undefined;
  if (!b || typeof b !== 'object' || b.resourceType !== 'Bundle') {
    throw badRequest('POST to the base expects a Bundle of type batch or transaction');
  }
  if (b.type !== 'batch' && b.type !== 'transaction') {
    throw FhirError.of(400, 'not-supported', `Bundle.type must be batch or transaction, not "${b.type}"`, ['Bundle.type']);
  }
  if (b.entry !== undefined && !Array.isArray(b.entry)) throw badRequest('Bundle.entry must be an array', ['Bundle.entry']);
  const prefer = req.headers.prefer;
  return b.type === 'transaction' ? transaction(ctx, b, prefer) : batch(ctx, b, prefer);
}

setBundleHandler(handleBundle);
