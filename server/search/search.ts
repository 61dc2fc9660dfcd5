/** Type-level search: clauses -> SQL over resources + index tables, keyset-paged. */
import type { OperationOutcomeIssue } from 'fhir/r4';
import { registry, SearchParamDef } from '../../resources';
import type { Tx } from '../db/tenant-tx';
import { badRequest, FhirError, notFound } from '../fhir/errors';
import { Clause, parseClause, QueryInput } from './params';
import { sameRowDateClauses, SqlFragment, type ClauseContext } from './query';
import { singleValued } from './cardinality';
import { condition, UnknownParameter } from './conditions';
import { parseIncludes, resolveIncludes } from './include';
import { afterCursor, orderBy, parseSort } from './sort';
import { ValueSetResolver } from './valuesets';
import { blindIndexOf, openRows } from '../crypto/at-rest';

/** Parameters that shape the result rather than select resources. */
export const CONTROL_PARAMS = new Set([
  '_count', '_sort', '_summary', '_elements', '_total', '_format', '_pretty', '_cursor', '_include', '_revinclude', '_contained', '_containedType', '_type',
]);

export interface SearchRequest {
  /** The type searched; for a system-level search the types of `_type` (all when absent). */
  type: string;
  types?: string[];
  params: QueryInput;
  baseUrl: string;
  strict: boolean;
  defaultCount: number;
  maxCount: number;
  /** An extra condition over `resources r` (authorization: a patient compartment, a granular scope). */
  restrict?: SqlFragment;
}

export interface SearchMatch {
  type: string;
  id: string;
  json: string;
}

export interface SearchResult {
  matches: SearchMatch[];
  /** _include/_revinclude results (search.mode = include). */
  included: SearchMatch[];
  total?: number;
  /** Parameters actually applied (for the self link). */
  applied: QueryInput;
  nextCursor?: string;
  warnings: OperationOutcomeIssue[];
  count: number;
}

interface Cursor {
  k: Array<string | null>; // sort key values of the last row
  i: string; // its id
}

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

function decodeCursor(s: string): Cursor {
  try {
    const c = JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
    if (Array.isArray(c.k) && typeof c.i === 'string' && c.k.every((v: unknown) => v === null || typeof v === 'string')) return c;
  } catch {
    /* fallthrough */
  }
  throw badRequest('Invalid _cursor: use the next link exactly as the server returned it');
}

export function parseCount(raw: string | undefined, def: number, max: number): number {
  if (raw === undefined) return def;
  if (!/^\d+$/.test(raw)) throw badRequest(`_count must be a non-negative integer, not "${raw}"`, ['_count']);
  return Math.min(Number(raw), max);
}

/** Builds the WHERE conditions for a search; returns the applied params and warnings. */
/** Parameters a system-level search (across types) understands: the ones every resource has. */
const SYSTEM_PARAMS = new Set(['_id', '_lastUpdated', '_tag', '_profile', '_security', '_source']);

export function buildConditions(type: string, params: QueryInput, baseUrl: string, strict: boolean, system = false, ctx: ClauseContext = {}) {
  const def = registry.get(type);
  if (!def) throw notFound(`Resource type "${type}" is not supported`);
  const conds: SqlFragment[] = [];
  const applied: QueryInput = [];
  const warnings: OperationOutcomeIssue[] = [];
  const sameRow = sameRowDateGroups(type, params, system);
  for (const [i, [key, value]] of params.entries()) {
    const name = key.split(/[:.]/)[0];
    if (CONTROL_PARAMS.has(name)) continue;
    const group = sameRow.get(i);
    if (group) {
      // date=ge..&date=lt.. on a one-value parameter: one condition on the same index row
      if (group.done) continue;
      group.done = true;
      conds.push(sameRowDateClauses(group.def, group.clauses));
      for (const c of group.clauses) applied.push([key, c.values[0]]);
      continue;
    }
    try {
      if (system && !SYSTEM_PARAMS.has(name)) {
        throw new UnknownParameter(`"${name}" cannot be used in a search across types (use ${[...SYSTEM_PARAMS].join(', ')})`);
      }
      conds.push(condition(type, key, value, baseUrl, 0, ctx));
      applied.push([key, value]);
    } catch (e) {
      if (!(e instanceof UnknownParameter)) throw e;
      if (strict) throw FhirError.of(400, 'not-supported', e.message, [key]);
      warnings.push({ severity: 'warning', code: 'not-supported', diagnostics: `${e.message}; it was ignored`, expression: [key] });
    }
  }
  return { conds, applied, warnings };
}

/**
 * The search conditions with the index ids read first: one condition that can drive (the lowest
 * rank, see query.ts DRIVER_RANK) becomes the source of candidate ids, the other index conditions
 * are checked on those ids, and only the survivors are joined to `resources`:
 *   r.id IN (SELECT r.id FROM (SELECT i.tenant_id, i.res_type, i.res_id AS id FROM idx_x i
 *                               WHERE <driver>) r WHERE <other conditions>)
 * The other conditions keep their text: they refer to r.tenant_id, r.res_type and r.id, which the
 * inner `r` provides. Conditions on other resource columns (_lastUpdated) stay outside.
 */
export function drivingSet(conds: SqlFragment[], tenant: string, type: string): { where: string[]; bindings: any[] } {
  const candidates = conds.filter((c) => c.driver);
  if (!candidates.length) return { where: conds.map((c) => `(${c.sql})`), bindings: conds.flatMap((c) => c.bindings) };
  // One condition or several: the candidate ids come first, as one array read through the
  // driver's index. (A single condition used to be a plain EXISTS, which plans ~0.1 ms faster; at
  // 100,000 patients Postgres underestimated Patient?birthdate=ge2008..&lt2009.. at 215 of 2,287
  // matches and walked all 100,000 Patients in _lastUpdated order, probing each: 1.6 s.)
  const driver = candidates.reduce((a, b) => (b.driver!.rank < a.driver!.rank ? b : a));
  const d = driver.driver!;
  const inner = conds.filter((c) => c !== driver && !c.usesRow);
  const outer = conds.filter((c) => c !== driver && c.usesRow);
  // The candidate ids as one array computed first (an InitPlan): read by the driver's index and
  // checked by the other conditions' probes, whatever the row estimates say (see exists() in query.ts).
  const sql =
    `r.id = ANY(ARRAY(SELECT r.id FROM (SELECT ${d.alias}.tenant_id, ${d.alias}.res_type, ${d.alias}.res_id AS id FROM ${d.table} ${d.alias}
                                 WHERE ${d.alias}.tenant_id = ? AND ${d.alias}.res_type = ? AND ${d.cond.sql}) r` +
    `${inner.length ? ` WHERE ${inner.map((c) => `(${c.sql})`).join(' AND ')}` : ''}))`;
  return {
    where: [sql, ...outer.map((c) => `(${c.sql})`)],
    bindings: [tenant, type, ...d.cond.bindings, ...inner.flatMap((c) => c.bindings), ...outer.flatMap((c) => c.bindings)],
  };
}

/**
 * Date clauses that can share one index row: several plain (no modifier, no chain) single-value
 * clauses of one date parameter with at most one value per resource. Keyed by the parameter name.
 */
function sameRowDateGroups(type: string, params: QueryInput, system: boolean) {
  const byPair = new Map<number, { def: SearchParamDef; clauses: Clause[]; done: boolean }>();
  if (system) return byPair;
  const candidates = new Map<string, number[]>();
  params.forEach(([key, value], i) => {
    if (!/^[a-z][a-z0-9-]*$/.test(key) || value === '' || value.includes(',')) return;
    const def = registry.get(type)?.searchParams.get(key);
    if (!def || def.type !== 'date' || !def.expression || !singleValued(def)) return;
    candidates.set(key, [...(candidates.get(key) ?? []), i]);
  });
  for (const [key, pairs] of candidates) {
    if (pairs.length < 2) continue;
    const group = { def: registry.get(type)!.searchParams.get(key)!, clauses: pairs.map((i) => parseClause(key, params[i][1])), done: false };
    for (const i of pairs) byPair.set(i, group);
  }
  return byPair;
}

/**
 * buildConditions, with the value sets of :in / :not-in read from the tenant first: the first
 * build records the value sets the conditions need, and only then (if any) they are loaded and
 * the conditions built again.
 */
export async function resolveConditions(tx: Tx, type: string, params: QueryInput, baseUrl: string, strict: boolean, system = false) {
  const valueSets = new ValueSetResolver();
  const ctx: ClauseContext = { valueSets, blind: await blindIndexOf(tx), tenant: tx.tenant };
  const built = buildConditions(type, params, baseUrl, strict, system, ctx);
  if (!valueSets.pending) return built;
  await valueSets.load(tx, baseUrl);
  return buildConditions(type, params, baseUrl, strict, system, ctx);
}

/**
 * A counted first page whose one condition is a single value of a string, token, reference or uri
 * parameter (or _id, or no condition): its generic plan reads that value's index entries by
 * equality or prefix, as a custom plan would, and the whole match set is read anyway for the
 * count, so one generic plan serves every value. Not for ranges (dates, numbers, quantities),
 * OR lists or modifiers: at 100,000 patients the generic plan of Patient?birthdate=ge..&lt..
 * scanned every birthdate before the upper bound (54 ms instead of 2).
 */
const GENERIC_TYPES = new Set(['string', 'token', 'reference', 'uri']);
function genericPlanSafe(type: string, conds: SqlFragment[], applied: QueryInput): boolean {
  if (conds.length > 1) return false;
  const used = applied.filter(([k]) => !CONTROL_PARAMS.has(k.split(':')[0]) && k !== '_sort');
  if (used.length === 0) return conds.length === 0;
  if (used.length > 1) return false;
  const [key, value] = used[0];
  const [name, modifier] = key.split(':');
  if (value.includes(',') || (modifier !== undefined && modifier !== 'exact')) return false;
  if (name === '_id') return true;
  const def = registry.get(type)?.searchParams.get(name);
  return !!def && GENERIC_TYPES.has(def.type);
}

export async function search(tx: Tx, req: SearchRequest): Promise<SearchResult> {
  const get = (k: string) => req.params.find(([key]) => key === k)?.[1];
  const count = parseCount(get('_count'), req.defaultCount, req.maxCount);
  const totalAsked = get('_total');
  const totalMode = totalAsked ?? 'accurate';
  if (!['none', 'estimate', 'accurate'].includes(totalMode)) throw badRequest(`_total must be none, estimate or accurate`, ['_total']);
  const summary = get('_summary');
  const sortRaw = get('_sort');
  const sortWarnings: OperationOutcomeIssue[] = [];
  const { keys: sortKeys, applied: sortApplied } = parseSort(req.type, sortRaw, req.strict, sortWarnings);
  if (req.types && sortKeys.some((k) => k.name !== '_lastUpdated' && k.name !== '_id')) {
    throw badRequest('A search across types can only _sort on _lastUpdated or _id', ['_sort']);
  }
  const system = req.types !== undefined;
  const { conds, applied, warnings } = await resolveConditions(tx, req.type, req.params, req.baseUrl, req.strict, system);
  warnings.push(...sortWarnings);
  if (sortApplied) applied.push(['_sort', sortApplied]);
  const includeSpecs = parseIncludes(req.params, warnings, req.strict);
  for (const spec of includeSpecs) if (!applied.some(([k, v]) => k === spec.raw[0] && v === spec.raw[1])) applied.push(spec.raw);
  const contained = get('_contained');
  if (contained !== undefined && contained !== 'false') {
    throw FhirError.of(400, 'not-supported', '_contained is not supported: contained resources are searched only as part of their container');
  }
  const filter = system ? { where: conds.map((c) => `(${c.sql})`), bindings: conds.flatMap((c) => c.bindings) } : drivingSet(conds, tx.tenant, req.type);
  const where = [`r.tenant_id = ?`, system ? `r.res_type = ANY(?)` : `r.res_type = ?`, `r.deleted = false`, ...filter.where];
  const bindings: any[] = [tx.tenant, system ? req.types : req.type, ...filter.bindings];
  if (req.restrict) {
    // authorization (a patient compartment, a granular scope): a filter on the candidates
    where.push(`(${req.restrict.sql})`);
    bindings.push(...req.restrict.bindings);
  }

  let total: number | undefined;
  const onlyCount = summary === 'count' || count === 0;
  const cursorRaw = get('_cursor');
  if (totalMode === 'estimate' && !onlyCount) {
    // The planner's row estimate: cheap on large tables, exact enough for a progress bar.
    const plan = await tx.raw(`EXPLAIN (FORMAT JSON) SELECT 1 FROM resources r WHERE ${where.join(' AND ')}`, bindings);
    const p = plan.rows[0]['QUERY PLAN'];
    total = Math.round((typeof p === 'string' ? JSON.parse(p) : p)[0].Plan['Plan Rows']);
  } else if (onlyCount || (totalMode === 'accurate' && (totalAsked !== undefined || cursorRaw))) {
    const cnt = await tx.raw(`SELECT count(*)::int AS n FROM resources r WHERE ${where.join(' AND ')}`, bindings);
    total = Number(cnt.rows[0].n);
  }
  if (onlyCount) return { matches: [], included: [], total, applied, warnings, count };

  const pageWhere = [...where];
  const pageBindings = [...bindings];
  if (cursorRaw) {
    const c = decodeCursor(cursorRaw);
    if (c.k.length !== sortKeys.length) throw badRequest('Invalid _cursor for this _sort: use the next link exactly as returned');
    const after = afterCursor(sortKeys, c.k, c.i);
    pageWhere.push(after.sql);
    pageBindings.push(...after.bindings);
  }
  const keySelect = sortKeys.map((k, i) => `${k.expr.sql} AS k${i}`).join(', ');
  const keyBindings = sortKeys.flatMap((k) => k.expr.bindings);
  const order = orderBy(sortKeys);
  // A first page counts its matches in the same statement (count(*) OVER () before the LIMIT),
  // instead of running the whole search again as count(*). The JSON is read for the page only.
  const windowTotal = totalMode === 'accurate' && total === undefined && !cursorRaw;
  const generic = windowTotal && !system && !req.restrict && genericPlanSafe(req.type, conds, applied);
  const rows = await tx.raw(
    `SELECT p.res_type, p.id, c.content::text AS json, ${sortKeys.map((_, i) => `p.k${i}::text AS k${i}`).join(', ')}${windowTotal ? ', p.total' : ''}
       FROM (SELECT r.res_type, r.id, ${sortKeys.map((_, i) => `r.k${i}`).join(', ')}${windowTotal ? ', count(*) OVER () AS total' : ''}
               FROM (SELECT r.res_type, r.id, ${keySelect} FROM resources r WHERE ${pageWhere.join(' AND ')}) r
              ORDER BY ${order.sql} LIMIT ?) p
       JOIN resources c ON c.tenant_id = ? AND c.res_type = p.res_type AND c.id = p.id
      ORDER BY ${order.sql.replace(/\bk(\d+)/g, 'p.k$1').replace(/\br\.id\b/g, 'p.id')}`,
    [...keyBindings, ...pageBindings, count + 1, tx.tenant],
    { generic },
  );
  const list = rows.rows as Array<Record<string, string>>;
  if (windowTotal) total = list.length ? Number(list[0].total) : 0;
  const matches = await openRows(tx, list.slice(0, count).map((r) => ({ type: r.res_type, id: r.id, json: r.json })), (m) => m.type, (m) => m.id);
  let nextCursor: string | undefined;
  if (list.length > count) {
    const last = list[count - 1];
    nextCursor = encodeCursor({ k: sortKeys.map((_, i) => last[`k${i}`] ?? null), i: last.id });
  }
  if (totalMode === 'accurate' && total === undefined) {
    // No _total asked on a first page: a page that holds every match is its own count; only a
    // longer result costs a count query.
    if (list.length <= count) total = matches.length;
    else {
      const cnt = await tx.raw(`SELECT count(*)::int AS n FROM resources r WHERE ${where.join(' AND ')}`, bindings);
      total = Number(cnt.rows[0].n);
    }
  }
  const included = await resolveIncludes(tx, includeSpecs, matches, warnings);
  return { matches, included, total, applied, nextCursor, warnings, count };
}
