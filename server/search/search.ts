/** Type-level search: clauses -> SQL over resources + index tables, keyset-paged. */
import type { OperationOutcomeIssue } from 'fhir/r4';
import { registry } from '../../resources';
import type { Tx } from '../db/tenant-tx';
import { badRequest, FhirError, notFound } from '../fhir/errors';
import { Clause, parseClause, QueryInput } from './params';
import { clauseSql, isSupportedParam, lastUpdatedClause, SqlFragment } from './query';

/** Parameters that shape the result rather than select resources. */
export const CONTROL_PARAMS = new Set([
  '_count', '_sort', '_summary', '_elements', '_total', '_format', '_pretty', '_cursor', '_include', '_revinclude', '_contained', '_containedType',
]);

export interface SearchRequest {
  type: string;
  params: QueryInput;
  baseUrl: string;
  strict: boolean;
  defaultCount: number;
  maxCount: number;
}

export interface SearchMatch {
  id: string;
  json: string;
  lastUpdated: Date;
}

export interface SearchResult {
  matches: SearchMatch[];
  total?: number;
  /** Parameters actually applied (for the self link). */
  applied: QueryInput;
  nextCursor?: string;
  warnings: OperationOutcomeIssue[];
  count: number;
}

interface Cursor {
  t: string; // last_updated ISO
  i: string; // id
}

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

function decodeCursor(s: string): Cursor {
  try {
    const c = JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
    if (typeof c.t === 'string' && typeof c.i === 'string' && !Number.isNaN(Date.parse(c.t))) return c;
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
export function buildConditions(type: string, params: QueryInput, baseUrl: string, strict: boolean) {
  const def = registry.get(type);
  if (!def) throw notFound(`Resource type "${type}" is not supported`);
  const conds: SqlFragment[] = [];
  const applied: QueryInput = [];
  const warnings: OperationOutcomeIssue[] = [];
  for (const [key, value] of params) {
    const clause: Clause = parseClause(key, value);
    if (CONTROL_PARAMS.has(clause.name)) continue;
    if (clause.name === '_id') {
      if (clause.modifier) throw badRequest(`Modifier :${clause.modifier} is not supported on _id`, [key]);
      conds.push({ sql: `r.id = ANY(?)`, bindings: [clause.values] });
      applied.push([key, value]);
      continue;
    }
    if (clause.name === '_lastUpdated') {
      conds.push(lastUpdatedClause(clause));
      applied.push([key, value]);
      continue;
    }
    const p = def.searchParams.get(clause.name);
    if (!p || !isSupportedParam(p)) {
      const msg = p
        ? `Search parameter "${clause.name}" (type ${p.type}) is not supported on ${type}`
        : `Unknown search parameter "${clause.name}" for ${type}`;
      if (strict) throw FhirError.of(400, 'not-supported', msg, [key]);
      warnings.push({ severity: 'warning', code: 'not-supported', diagnostics: `${msg}; it was ignored`, expression: [key] });
      continue;
    }
    conds.push(clauseSql(p, clause, baseUrl));
    applied.push([key, value]);
  }
  return { conds, applied, warnings };
}

export async function search(tx: Tx, req: SearchRequest): Promise<SearchResult> {
  const get = (k: string) => req.params.find(([key]) => key === k)?.[1];
  const count = parseCount(get('_count'), req.defaultCount, req.maxCount);
  const totalMode = get('_total') ?? 'accurate';
  if (!['none', 'estimate', 'accurate'].includes(totalMode)) throw badRequest(`_total must be none, estimate or accurate`, ['_total']);
  const summary = get('_summary');
  let sort = get('_sort');
  let sortWarning: OperationOutcomeIssue | undefined;
  if (sort && !['_lastUpdated', '-_lastUpdated'].includes(sort)) {
    const msg = `_sort=${sort} is not supported yet (supported: _lastUpdated, -_lastUpdated)`;
    if (req.strict) throw FhirError.of(400, 'not-supported', msg, ['_sort']);
    sortWarning = { severity: 'warning', code: 'not-supported', diagnostics: `${msg}; it was ignored`, expression: ['_sort'] };
    sort = undefined;
  }
  const desc = sort === '-_lastUpdated';
  const { conds, applied, warnings } = buildConditions(req.type, req.params, req.baseUrl, req.strict);
  if (sortWarning) warnings.push(sortWarning);
  // the self link shows _sort only when it was applied
  if (sort) applied.push(['_sort', sort]);
  for (const k of ['_include', '_revinclude', '_contained']) {
    if (get(k) !== undefined) {
      const msg = `${k} is not supported yet`;
      if (req.strict) throw FhirError.of(400, 'not-supported', msg, [k]);
      warnings.push({ severity: 'warning', code: 'not-supported', diagnostics: `${msg}; it was ignored`, expression: [k] });
    }
  }
  const where = [`r.tenant_id = ?`, `r.res_type = ?`, `r.deleted = false`, ...conds.map((c) => `(${c.sql})`)];
  const bindings: any[] = [tx.tenant, req.type, ...conds.flatMap((c) => c.bindings)];

  let total: number | undefined;
  const onlyCount = summary === 'count' || count === 0;
  const cursorRaw = get('_cursor');
  if (totalMode !== 'none' || onlyCount) {
    const cnt = await tx.raw(`SELECT count(*)::int AS n FROM resources r WHERE ${where.join(' AND ')}`, bindings);
    total = Number(cnt.rows[0].n);
  }
  if (onlyCount) return { matches: [], total, applied, warnings, count };

  const pageWhere = [...where];
  const pageBindings = [...bindings];
  if (cursorRaw) {
    const c = decodeCursor(cursorRaw);
    pageWhere.push(desc ? `(r.last_updated, r.id) < (?::timestamptz, ?)` : `(r.last_updated, r.id) > (?::timestamptz, ?)`);
    pageBindings.push(c.t, c.i);
  }
  const dir = desc ? 'DESC' : 'ASC';
  const rows = await tx.raw(
    `SELECT r.id, r.last_updated, r.content::text AS json FROM resources r
      WHERE ${pageWhere.join(' AND ')} ORDER BY r.last_updated ${dir}, r.id ${dir} LIMIT ?`,
    [...pageBindings, count + 1],
  );
  const list = rows.rows as Array<{ id: string; last_updated: Date | string; json: string }>;
  const matches = list.slice(0, count).map((r) => ({
    id: r.id,
    json: r.json,
    lastUpdated: r.last_updated instanceof Date ? r.last_updated : new Date(r.last_updated),
  }));
  let nextCursor: string | undefined;
  if (list.length > count) {
    const last = matches[matches.length - 1];
    // Keep microsecond precision of the stored timestamp: re-read it as text.
    nextCursor = encodeCursor({ t: last.lastUpdated.toISOString(), i: last.id });
  }
  return { matches, total, applied, nextCursor, warnings, count };
}
