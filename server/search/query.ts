/**
 * Translates FHIR search clauses into SQL over the index tables. Every value reaches SQL only
 * as a bound parameter.
 */
import { registry, SearchParamDef } from '../../resources';
import { badRequest } from '../fhir/errors';
import { parseFhirDate } from './fhir-date';
import { TABLE_OF } from './indexer';
import { normalizeString } from './normalize';
import { Clause, Prefix, splitDollarRaw, splitPipe, splitPrefix, unescapeValue } from './params';
import { compositeComponents } from './composite';
import { DATE_SPAN_MS } from './date-span';
import type { ValueSetResolver } from './valuesets';
import { codeCandidates, type BlindIndex } from '../crypto/blind-index';
import { isEncryptedSystem } from '../crypto/policy';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const r4Model: { path2Type: Record<string, string> } = require('fhirpath/fhir-context/r4');

export interface SqlFragment {
  sql: string;
  bindings: any[];
  /**
   * Set when the fragment is `EXISTS (SELECT 1 FROM <table> <alias> WHERE <alias> belongs to r AND
   * <cond>)`: search() can then read the ids from that index first (see search.ts, drivingSet).
   */
  driver?: { table: string; alias: string; cond: SqlFragment; rank: number };
  /** The fragment reads columns of `r` other than tenant_id, res_type and id (e.g. last_updated). */
  usesRow?: boolean;
}

/** Which index to read first when several could drive a search: the usually most selective. */
const DRIVER_RANK: Record<string, number> = {
  idx_reference: 0, idx_token: 1, idx_string: 3, idx_uri: 4, idx_composite: 5, idx_date: 6, idx_quantity: 7, idx_number: 8,
};

/** What building a condition may need beyond the clause itself. */
export interface ClauseContext {
  /** Value sets for token :in / :not-in (resolved in a pre-pass, see valuesets.ts). */
  valueSets?: ValueSetResolver;
  /** The tenant's blind index: encrypted identifiers are indexed by it (crypto/blind-index.ts). */
  blind?: BlindIndex;
  /**
   * The tenant searched: chains and _has then read their inner matches first, as one array of ids
   * through the inner condition's index (conditions.ts idsMatching), instead of probing every
   * resource of the inner type.
   */
  tenant?: string;
}

const likeEscape = (s: string) => s.replace(/[\\%_]/g, (c) => '\\' + c);

function exists(table: string, param: string, cond: string, bindings: any[]): SqlFragment {
  return {
    // OFFSET 0 keeps the EXISTS a per-row probe by res_id (the owner index). Pulled up into a
    // semi-join, it is planned on row estimates, and a tenant newer than the table's statistics
    // is estimated at one row: nested loops over the lookup index with a join filter, quadratic
    // or worse (measured: minutes for two conditions over 9,000 Slots; docs/decisions.md).
    sql: `EXISTS (SELECT 1 FROM ${table} i WHERE i.tenant_id = r.tenant_id AND i.res_type = r.res_type AND i.res_id = r.id AND i.param = ? AND (${cond}) OFFSET 0)`,
    bindings: [param, ...bindings],
    driver: { table, alias: 'i', cond: { sql: `i.param = ? AND (${cond})`, bindings: [param, ...bindings] }, rank: DRIVER_RANK[table] ?? 9 },
  };
}

function orJoin(parts: SqlFragment[]): SqlFragment {
  return { sql: parts.map((p) => `(${p.sql})`).join(' OR '), bindings: parts.flatMap((p) => p.bindings) };
}

function dateRangeOf(param: string, value: string) {
  const range = parseFhirDate(value);
  if (!range) throw badRequest(`Invalid date "${value}" for search parameter "${param}"`, [param]);
  return range;
}

/** Comparison of a stored range [lo, hi) with a search range [slo, shi) for each prefix. */
function rangeCondition(prefix: Prefix, lo: string, hi: string, slo: unknown, shi: unknown): SqlFragment {
  switch (prefix) {
    case 'eq':
      return { sql: `${lo} >= ? AND ${hi} <= ?`, bindings: [slo, shi] };
    case 'ne':
      return { sql: `NOT (${lo} >= ? AND ${hi} <= ?)`, bindings: [slo, shi] };
    case 'gt':
      return { sql: `${hi} > ?`, bindings: [shi] };
    case 'lt':
      return { sql: `${lo} < ?`, bindings: [slo] };
    case 'ge':
      return { sql: `(${hi} > ? OR (${lo} >= ? AND ${hi} <= ?))`, bindings: [shi, slo, shi] };
    case 'le':
      return { sql: `(${lo} < ? OR (${lo} >= ? AND ${hi} <= ?))`, bindings: [slo, slo, shi] };
    case 'sa':
      return { sql: `${lo} >= ?`, bindings: [shi] };
    case 'eb':
      return { sql: `${hi} <= ?`, bindings: [slo] };
    case 'ap':
      return { sql: `${lo} < ? AND ${hi} > ?`, bindings: [shi, slo] };
  }
}

function approxDate(slo: Date, shi: Date): [Date, Date] {
  const now = Date.now();
  const gap = Math.max(Math.abs(now - slo.getTime()) * 0.1, 24 * 3600_000);
  return [new Date(slo.getTime() - gap), new Date(shi.getTime() + gap)];
}

/**
 * Index-friendly bounds a stored date range [lo, hi) must satisfy for a prefix to match (a
 * necessary condition, never sufficient: the exact rangeCondition stays next to it).
 *   loMin: lo >= loMin      loMax: lo < loMax      hiMin: hi > hiMin
 */
export interface DateBounds {
  loMin?: Date;
  loMax?: Date;
  hiMin?: Date;
}

function dateBounds(prefix: Prefix, slo: Date, shi: Date): DateBounds {
  switch (prefix) {
    case 'eq':
      return { loMin: slo, loMax: shi }; // lo >= slo and hi <= shi (and lo < hi)
    case 'gt':
      return { hiMin: shi };
    case 'lt':
    case 'eb': // hi <= slo implies lo < slo
      return { loMax: slo };
    case 'ge': // hi > shi, or lo >= slo (then hi > lo >= slo)
      return { hiMin: slo };
    case 'le': // lo < slo, or lo >= slo and hi <= shi (then lo < shi)
      return { loMax: shi };
    case 'sa':
      return { loMin: shi };
    case 'ap':
      return { loMax: shi, hiMin: slo };
    case 'ne':
      return {};
  }
}

const later = (a?: Date, b?: Date) => (!a ? b : !b ? a : a > b ? a : b);
const earlier = (a?: Date, b?: Date) => (!a ? b : !b ? a : a < b ? a : b);

/** Bounds that both sets imply (for clauses ANDed on the same index row). */
function bothBounds(a: DateBounds, b: DateBounds): DateBounds {
  return { loMin: later(a.loMin, b.loMin), loMax: earlier(a.loMax, b.loMax), hiMin: later(a.hiMin, b.hiMin) };
}

const WIDE_SPAN = DATE_SPAN_MS.length; // class of longer and open-ended ranges
const SAFE_MIN = Date.UTC(1, 0, 1);

/**
 * The bounds as conditions on idx_date's lookup index (tenant, type, param, span, lo, hi).
 * `hi > X` alone bounds nothing an index on lo can use; within a span class it does: a range
 * no longer than S with hi > X has lo > X - S. So it becomes one arm per class, each a range
 * on lo, and the (rare) open-ended rows of the wide class are read whole.
 */
function boundsSql(b: DateBounds, spanArms: boolean): SqlFragment | undefined {
  if (!b.loMin && !b.loMax && !b.hiMin) return undefined;
  if (!spanArms) {
    // a probe of one resource's rows (idx_date_owner): plain bounds, no per-class arms to plan
    const sql: string[] = [];
    const bindings: any[] = [];
    if (b.loMin) sql.push('i.lo >= ?'), bindings.push(b.loMin);
    if (b.loMax) sql.push('i.lo < ?'), bindings.push(b.loMax);
    if (b.hiMin) sql.push('i.hi > ?'), bindings.push(b.hiMin);
    return { sql: sql.join(' AND '), bindings };
  }
  const arm = (span: number | undefined, loAfter?: Date): SqlFragment => {
    const sql: string[] = [span === undefined ? `i.span = ANY(?::smallint[])` : `i.span = ?`];
    const bindings: any[] = [span === undefined ? [...DATE_SPAN_MS.map((_, k) => k), WIDE_SPAN] : span];
    const loMin = b.loMin && (!loAfter || b.loMin > loAfter) ? b.loMin : undefined;
    if (loMin) sql.push('i.lo >= ?'), bindings.push(loMin);
    else if (loAfter && loAfter.getTime() > SAFE_MIN) sql.push('i.lo > ?'), bindings.push(loAfter);
    if (b.loMax) sql.push('i.lo < ?'), bindings.push(b.loMax);
    if (b.hiMin) sql.push('i.hi > ?'), bindings.push(b.hiMin);
    return { sql: sql.join(' AND '), bindings };
  };
  if (!b.hiMin) return arm(undefined);
  const arms = DATE_SPAN_MS.map((ms, k) => arm(k, new Date(b.hiMin!.getTime() - ms)));
  arms.push(arm(WIDE_SPAN));
  return orJoin(arms);
}

/** One value of a date clause: the exact comparison and the bounds it implies. */
function dateValue(name: string, v: string): { exact: SqlFragment; bounds: DateBounds } {
  const { prefix, rest } = splitPrefix(v);
  let { lo, hi } = dateRangeOf(name, rest);
  if (prefix === 'ap') [lo, hi] = approxDate(lo, hi);
  return { exact: rangeCondition(prefix, 'i.lo', 'i.hi', lo, hi), bounds: dateBounds(prefix, lo, hi) };
}

function withBounds(exact: SqlFragment, bounds: DateBounds, spanArms: boolean): SqlFragment {
  const b = boundsSql(bounds, spanArms);
  return b ? { sql: `(${b.sql}) AND (${exact.sql})`, bindings: [...b.bindings, ...exact.bindings] } : exact;
}

/**
 * EXISTS over idx_date for the values (ORed), each with its bounds. As a probe of one resource
 * (the usual case when another index drives) the bounds are plain; only when the date rows drive
 * the search (the `driver` form) are they split per span class, which costs planning time.
 */
function dateExists(def: SearchParamDef, values: Array<{ exact: SqlFragment; bounds: DateBounds }>): SqlFragment {
  const probe = orJoin(values.map((v) => withBounds(v.exact, v.bounds, false)));
  const drive = orJoin(values.map((v) => withBounds(v.exact, v.bounds, true)));
  const e = exists('idx_date', def.code, probe.sql, probe.bindings);
  const d = exists('idx_date', def.code, drive.sql, drive.bindings);
  return { ...e, driver: d.driver };
}

function dateClause(table: 'idx_date', def: SearchParamDef, clause: Clause): SqlFragment {
  void table;
  return dateExists(def, clause.values.map((v) => dateValue(clause.name, v)));
}

/**
 * Several date clauses of one parameter that must hold on the SAME index row (`date=ge2021-03&
 * date=lt2021-04` on a parameter with at most one value per resource): one EXISTS whose bounds
 * are the intersection of theirs, so the index reads only the rows inside both. Each clause here
 * has one value, no modifier (the caller checks).
 */
export function sameRowDateClauses(def: SearchParamDef, clauses: Clause[]): SqlFragment {
  const values = clauses.map((c) => dateValue(c.name, c.values[0]));
  const bounds = values.reduce<DateBounds>((acc, v) => bothBounds(acc, v.bounds), {});
  const exact = { sql: values.map((v) => `(${v.exact.sql})`).join(' AND '), bindings: values.flatMap((v) => v.exact.bindings) };
  return dateExists(def, [{ exact, bounds }]);
}

export function lastUpdatedClause(clause: Clause): SqlFragment {
  const parts = clause.values.map((v) => {
    const { prefix, rest } = splitPrefix(v);
    let { lo, hi } = dateRangeOf(clause.name, rest);
    if (prefix === 'ap') [lo, hi] = approxDate(lo, hi);
    return rangeCondition(prefix, 'r.last_updated', "(r.last_updated + interval '1 millisecond')", lo, hi);
  });
  return { ...orJoin(parts), usesRow: true };
}

/**
 * Exact decimal strings (numeric bindings) for a search number: its implicit range
 * (search.html#number: `100` → [99.5, 100.5), `100.00` → [99.995, 100.005); exponent form one
 * digit finer than the mantissa, so `1e2` → [95, 105) as in the spec) and the ±10 % of `ap`.
 * Computed on scaled integers: float arithmetic misplaces the bounds of long decimals.
 */
function exactNumber(raw: string): { lo: string; hi: string; apLo: string; apHi: string } {
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(raw)!;
  const frac = m[3] ?? '';
  const scale = frac.length - Number(m[4] ?? 0); // raw = digits × 10^-scale
  const k = m[4] === undefined ? -(frac.length + 1) : Number(m[4]) - frac.length - 2; // half width = 5 × 10^k
  const S = Math.max(scale, -k, 0) + 1; // one more digit for the 10 % of ap
  const v = BigInt((m[1] === '-' ? '-' : '') + (m[2] + frac || '0')) * 10n ** BigInt(S - scale);
  const half = 5n * 10n ** BigInt(S + k);
  const abs = v < 0n ? -v : v;
  const fmt = (x: bigint) => {
    const d = (x < 0n ? -x : x).toString().padStart(S + 1, '0');
    return `${x < 0n ? '-' : ''}${d.slice(0, -S)}.${d.slice(-S)}`;
  };
  return { lo: fmt(v - half), hi: fmt(v + half), apLo: fmt(v - abs / 10n), apHi: fmt(v + abs / 10n) };
}

function parseNumber(param: string, s: string): { n: number; lo: number; hi: number; raw: string } {
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(s)) {
    throw badRequest(`Invalid number "${s}" for search parameter "${param}"`, [param]);
  }
  const n = Number(s);
  const { lo, hi } = exactNumber(s);
  return { n, lo: Number(lo), hi: Number(hi), raw: s };
}

function numberCondition(prefix: Prefix, col: string, num: { raw: string }): SqlFragment {
  const x = exactNumber(num.raw);
  switch (prefix) {
    case 'eq':
      return { sql: `${col} >= ? AND ${col} < ?`, bindings: [x.lo, x.hi] };
    case 'ne':
      return { sql: `NOT (${col} >= ? AND ${col} < ?)`, bindings: [x.lo, x.hi] };
    case 'gt':
    case 'sa':
      return { sql: `${col} > ?`, bindings: [num.raw] };
    case 'lt':
    case 'eb':
      return { sql: `${col} < ?`, bindings: [num.raw] };
    case 'ge':
      return { sql: `${col} >= ?`, bindings: [num.raw] };
    case 'le':
      return { sql: `${col} <= ?`, bindings: [num.raw] };
    case 'ap':
      return { sql: `${col} >= ? AND ${col} <= ?`, bindings: [x.apLo, x.apHi] };
  }
}

/** Token condition on a coding in the value set. Before the value set is loaded: no match. */
function inValueSet(clause: Clause, ref: string, ctx: ClauseContext): SqlFragment {
  if (!ctx.valueSets) throw badRequest(`:${clause.modifier} cannot be used here (value sets are resolved only in searches)`, [clause.raw]);
  const set = ctx.valueSets.lookup(ref, clause.raw);
  if (!set) return { sql: 'false', bindings: [] };
  const pairs = (list: Array<[string, string]>) => [list.map((p) => p[0]), list.map((p) => p[1])];
  const ors: SqlFragment[] = [];
  if (set.pairs.length) {
    // A code without a system (a `code` element: its system is implied by the binding) matches by code.
    ors.push({
      sql: `EXISTS (SELECT 1 FROM unnest(?::text[], ?::text[]) AS vs(s, c) WHERE vs.c = i.code AND (vs.s = i.system OR i.system IS NULL))`,
      bindings: pairs(set.pairs),
    });
  }
  if (set.systems.length) {
    const except = set.exceptPairs.length
      ? { sql: ` AND NOT EXISTS (SELECT 1 FROM unnest(?::text[], ?::text[]) AS vx(s, c) WHERE vx.s = i.system AND vx.c = i.code)`, bindings: pairs(set.exceptPairs) }
      : { sql: '', bindings: [] };
    ors.push({ sql: `i.system = ANY(?::text[]) AND i.code IS NOT NULL${except.sql}`, bindings: [set.systems, ...except.bindings] });
  }
  return ors.length ? orJoin(ors) : { sql: 'false', bindings: [] };
}

/** Whether a token parameter's expression reaches an Identifier (where :of-type applies). */
const identifierParams = new WeakMap<SearchParamDef, boolean>();
function isIdentifierParam(def: SearchParamDef): boolean {
  let known = identifierParams.get(def);
  if (known === undefined) identifierParams.set(def, (known = reachesIdentifier(def)));
  return known;
}

function reachesIdentifier(def: SearchParamDef): boolean {
  return (def.expression ?? '').split('|').some((branch) => {
    const path = branch.trim().replace(/^\(+|\)+$/g, '').replace(/\.where\(.*\)$/, '').trim();
    return r4Model.path2Type[path] === 'Identifier';
  });
}

function tokenClause(def: SearchParamDef, clause: Clause, ctx: ClauseContext): SqlFragment {
  const mod = clause.modifier;
  if (mod === 'of-type' && !isIdentifierParam(def)) {
    throw badRequest(`:of-type applies to Identifier parameters; "${clause.name}" is not one`, [clause.raw]);
  }
  const parts = clause.values.map((v, k): SqlFragment => {
    const raw = clause.rawValues[k]; // escapes kept: `\|` is a literal pipe, not a separator
    if (mod === 'in' || mod === 'not-in') return inValueSet(clause, v, ctx);
    if (mod === 'of-type') {
      // typeSystem|typeCode|value, all three required
      const [typeSystem, typeCode, value, ...extra] = splitPipe(raw);
      if (!typeSystem || !typeCode || !value || extra.length) {
        throw badRequest(`:of-type takes typeSystem|typeCode|value (all three), not "${v}"`, [clause.raw]);
      }
      return { sql: `i.type_system = ? AND i.type_code = ? AND i.code = ANY(?::text[])`, bindings: [typeSystem, typeCode, codeCandidates(ctx.blind, value)] };
    }
    if (mod === 'text') return normalizeString(v) ? { sql: `i.display LIKE ?`, bindings: [likeEscape(normalizeString(v)) + '%'] } : { sql: 'false', bindings: [] };
    const pipe = splitPipe(raw);
    if (pipe.length === 1) {
      // on an Identifier parameter the value may be an encrypted identifier's: match its blind hash too
      if (ctx.blind && isIdentifierParam(def)) return { sql: `i.code = ANY(?::text[])`, bindings: [codeCandidates(ctx.blind, v)] };
      return { sql: `i.code = ?`, bindings: [v] };
    }
    const [system, code] = pipe;
    if (system === '') return { sql: `i.system IS NULL AND i.code = ?`, bindings: [code] };
    if (code === '' || code === undefined) return { sql: `i.system = ?`, bindings: [system] };
    if (ctx.blind && isEncryptedSystem(system)) return { sql: `i.system = ? AND i.code = ?`, bindings: [system, ctx.blind(code, system)] };
    return { sql: `i.system = ? AND i.code = ?`, bindings: [system, code] };
  });
  const f = orJoin(parts);
  const e = exists('idx_token', def.code, f.sql, f.bindings);
  return mod === 'not' || mod === 'not-in' ? { sql: `NOT ${e.sql}`, bindings: e.bindings } : e;
}

/**
 * Starts-with as a range the text_pattern_ops index can serve. LIKE is not leakproof, so under
 * row-level security PostgreSQL keeps it as a filter; the leakproof pattern operators ~>=~ / ~<~
 * become index conditions. LIKE stays as the exact check.
 */
function prefixCondition(col: string, prefix: string): SqlFragment {
  const like = { sql: `${col} LIKE ?`, bindings: [likeEscape(prefix) + '%'] };
  const last = prefix.charCodeAt(prefix.length - 1);
  if (last >= 0xd800 && last <= 0xdfff) return like; // surrogate pair: no simple successor
  const upper = prefix.slice(0, -1) + String.fromCharCode(last + 1);
  return { sql: `${col} ~>=~ ? AND ${col} ~<~ ? AND ${like.sql}`, bindings: [prefix, upper, ...like.bindings] };
}

function stringClause(def: SearchParamDef, clause: Clause): SqlFragment {
  const parts = clause.values.map((v): SqlFragment => {
    if (clause.modifier === 'exact') return { sql: `i.exact = ?`, bindings: [v] };
    const n = likeEscape(normalizeString(v));
    if (!n) return { sql: 'false', bindings: [] }; // only punctuation: nothing to compare
    if (clause.modifier === 'contains') return { sql: `i.value LIKE ?`, bindings: ['%' + n + '%'] };
    return prefixCondition('i.value', normalizeString(v));
  });
  const f = orJoin(parts);
  return exists('idx_string', def.code, f.sql, f.bindings);
}

function uriClause(def: SearchParamDef, clause: Clause): SqlFragment {
  const parts = clause.values.map((v): SqlFragment => {
    if (clause.modifier === 'below') return { sql: `i.value LIKE ?`, bindings: [likeEscape(v) + '%'] };
    if (clause.modifier === 'above') return { sql: `? LIKE (i.value || '%')`, bindings: [v] };
    return { sql: `i.value = ?`, bindings: [v] };
  });
  const f = orJoin(parts);
  return exists('idx_uri', def.code, f.sql, f.bindings);
}

function numberClause(def: SearchParamDef, clause: Clause): SqlFragment {
  const parts = clause.values.map((v) => {
    const { prefix, rest } = splitPrefix(v);
    return numberCondition(prefix, 'i.value', parseNumber(clause.name, rest));
  });
  const f = orJoin(parts);
  return exists('idx_number', def.code, f.sql, f.bindings);
}

function quantityClause(def: SearchParamDef, clause: Clause): SqlFragment {
  const parts = clause.rawValues.map((v): SqlFragment => {
    const [numPart, system, code] = splitPipe(v);
    const { prefix, rest } = splitPrefix(numPart);
    const cond = numberCondition(prefix, 'i.value', parseNumber(clause.name, rest));
    const sql = [cond.sql];
    const bindings = [...cond.bindings];
    if (system) {
      sql.push('i.system = ?');
      bindings.push(system);
    }
    if (code) {
      sql.push(system ? 'i.code = ?' : '(i.code = ? OR i.unit = ?)');
      bindings.push(code);
      if (!system) bindings.push(code);
    }
    return { sql: sql.join(' AND '), bindings };
  });
  const f = orJoin(parts);
  return exists('idx_quantity', def.code, f.sql, f.bindings);
}

function referenceClause(def: SearchParamDef, clause: Clause, baseUrl: string, ctx: ClauseContext): SqlFragment {
  const mod = clause.modifier;
  const parts = clause.values.map((v, k): SqlFragment => {
    if (mod === 'identifier') {
      // token syntax on Reference.identifier (indexed as url `identifier:system|value`)
      const pipe = splitPipe(clause.rawValues[k]);
      if (pipe.length === 1) return { sql: `i.url LIKE ?`, bindings: [`identifier:%|${likeEscape(v)}`] };
      const [system, value] = pipe;
      if (system !== '' && value === '') return { sql: `i.url LIKE ?`, bindings: [`identifier:${likeEscape(system)}|%`] };
      const indexed = ctx.blind && isEncryptedSystem(system) ? ctx.blind(value, system) : value;
      return { sql: `i.url = ?`, bindings: [`identifier:${system}|${indexed}`] };
    }
    let ref = v;
    if (ref.startsWith(baseUrl + '/')) ref = ref.slice(baseUrl.length + 1);
    const typed = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/.*)?$/.exec(ref);
    if (typed) return { sql: `i.target_type = ? AND i.target_id = ?`, bindings: [typed[1], typed[2]] };
    if (/^[A-Za-z0-9\-.]{1,64}$/.test(ref)) {
      const targetType = mod && registry.has(mod) ? mod : def.target?.length === 1 ? def.target[0] : undefined;
      if (mod && !registry.has(mod)) throw badRequest(`Unknown modifier ":${mod}" on reference parameter "${clause.name}"`);
      return targetType
        ? { sql: `i.target_id = ? AND i.target_type = ?`, bindings: [ref, targetType] }
        : { sql: `i.target_id = ?`, bindings: [ref] };
    }
    return { sql: `i.url = ?`, bindings: [v] };
  });
  const f = orJoin(parts);
  return exists('idx_reference', def.code, f.sql, f.bindings);
}


const MODIFIERS: Record<string, string[]> = {
  string: ['exact', 'contains', 'missing'],
  token: ['not', 'text', 'missing', 'in', 'not-in', 'of-type'],
  date: ['missing'],
  number: ['missing'],
  quantity: ['missing'],
  reference: ['identifier', 'missing'],
  uri: ['below', 'above', 'missing'],
};

export function isSupportedParam(def: SearchParamDef): boolean {
  if (def.type === 'composite') return compositeComponents(def) !== undefined;
  return Boolean(TABLE_OF[def.type]) && Boolean(def.expression);
}

/** SQL condition (over `resources r`) for one clause of a search on `def`. */
export function clauseSql(def: SearchParamDef, clause: Clause, baseUrl: string, ctx: ClauseContext = {}): SqlFragment {
  const mod = clause.modifier;
  if (mod && !(MODIFIERS[def.type]?.includes(mod) || (def.type === 'reference' && registry.has(mod)))) {
    throw badRequest(`Unknown or unsupported modifier ":${mod}" on search parameter "${clause.name}" (type ${def.type})`, [clause.raw]);
  }
  if (mod === 'missing') {
    const v = clause.values[0];
    if (v !== 'true' && v !== 'false') throw badRequest(`:missing takes true or false, not "${v}"`, [clause.raw]);
    const e = exists(TABLE_OF[def.type], def.code, 'true', []);
    return v === 'true' ? { sql: `NOT ${e.sql}`, bindings: e.bindings } : e;
  }
  if (clause.values.some((v) => v === '')) throw badRequest(`Search parameter "${clause.name}" has an empty value`, [clause.raw]);
  switch (def.type) {
    case 'string':
      return stringClause(def, clause);
    case 'token':
      return tokenClause(def, clause, ctx);
    case 'date':
      return dateClause('idx_date', def, clause);
    case 'number':
      return numberClause(def, clause);
    case 'quantity':
      return quantityClause(def, clause);
    case 'reference':
      return referenceClause(def, clause, baseUrl, ctx);
    case 'uri':
      return uriClause(def, clause);
    case 'composite':
      if (compositeComponents(def)) return compositeClause(def, clause, baseUrl);
      throw badRequest(`Composite search parameter "${clause.name}" is not supported`, [clause.raw]);
    default:
      throw badRequest(`Search parameter "${clause.name}" of type ${def.type} is not supported`, [clause.raw]);
  }
}

// ---- composite parameters (idx_composite, one row per combination of one item's values) ------

/** Condition on slot `col` (e.g. `i.c1_`) for one component value, in that component's own syntax. */
/** `raw` keeps its escapes: token and quantity split it on `|`, the other types unescape it. */
function componentCondition(type: SearchParamDef['type'], name: string, raw: string, col: string, baseUrl: string): SqlFragment {
  const v = type === 'token' || type === 'quantity' ? raw : unescapeValue(raw);
  switch (type) {
    case 'token': {
      const parts = splitPipe(v);
      if (parts.length === 1) return { sql: `${col}code = ?`, bindings: [parts[0]] };
      const [system, code] = parts;
      if (system === '') return { sql: `${col}system IS NULL AND ${col}code = ?`, bindings: [code] };
      if (code === '' || code === undefined) return { sql: `${col}system = ?`, bindings: [system] };
      return { sql: `${col}system = ? AND ${col}code = ?`, bindings: [system, code] };
    }
    case 'quantity': {
      const [numPart, system, code] = splitPipe(v);
      const { prefix, rest } = splitPrefix(numPart);
      const num = parseNumber(name, rest);
      const single = numberCondition(prefix, `${col}num`, num);
      // a Range: its bounds against the value's implicit range (open bounds are infinite)
      let [slo, shi] = [num.lo, num.hi];
      if (prefix === 'ap') [slo, shi] = [num.n - Math.abs(num.n) * 0.1, num.n + Math.abs(num.n) * 0.1];
      const range = rangeCondition(prefix, `coalesce(${col}nlo, '-Infinity'::numeric)`, `coalesce(${col}nhi, 'Infinity'::numeric)`, slo, shi);
      const sql = [`((${col}num IS NOT NULL AND ${single.sql}) OR (${col}num IS NULL AND (${range.sql})))`];
      const bindings = [...single.bindings, ...range.bindings];
      if (system) {
        sql.push(`${col}system = ?`);
        bindings.push(system);
      }
      if (code) {
        sql.push(system ? `${col}code = ?` : `(${col}code = ? OR ${col}text = ?)`);
        bindings.push(code);
        if (!system) bindings.push(code);
      }
      return { sql: sql.join(' AND '), bindings };
    }
    case 'number': {
      const { prefix, rest } = splitPrefix(v);
      return numberCondition(prefix, `${col}num`, parseNumber(name, rest));
    }
    case 'date': {
      const { prefix, rest } = splitPrefix(v);
      let { lo, hi } = dateRangeOf(name, rest);
      if (prefix === 'ap') [lo, hi] = approxDate(lo, hi);
      return rangeCondition(prefix, `${col}dlo`, `${col}dhi`, lo, hi);
    }
    case 'string': {
      const n = normalizeString(v);
      return n ? { sql: `${col}text LIKE ?`, bindings: [likeEscape(n) + '%'] } : { sql: 'false', bindings: [] };
    }
    case 'reference': {
      let ref = v;
      if (ref.startsWith(baseUrl + '/')) ref = ref.slice(baseUrl.length + 1);
      const typed = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/.*)?$/.exec(ref);
      if (typed) return { sql: `${col}system = ? AND ${col}code = ?`, bindings: [typed[1], typed[2]] };
      if (/^[A-Za-z0-9\-.]{1,64}$/.test(ref)) return { sql: `${col}code = ?`, bindings: [ref] };
      return { sql: `${col}text = ?`, bindings: [v] };
    }
    case 'uri':
      return { sql: `${col}code = ?`, bindings: [v] };
    default:
      throw badRequest(`Component type ${type} of "${name}" is not supported`, [name]);
  }
}

function compositeClause(def: SearchParamDef, clause: Clause, baseUrl: string): SqlFragment {
  const comps = compositeComponents(def)!;
  const syntax = comps.map((c) => `[${c.def.code}]`).join('$');
  const parts = clause.rawValues.map((v): SqlFragment => {
    const values = splitDollarRaw(v);
    if (values.length !== comps.length || values.some((x) => x === '')) {
      throw badRequest(`"${clause.name}" takes ${comps.length} values separated by $ (${syntax}), not "${v}"`, [clause.raw]);
    }
    const conds = values.map((x, k) => componentCondition(comps[k].def.type, clause.name, x, `i.c${k + 1}_`, baseUrl));
    return { sql: conds.map((c) => `(${c.sql})`).join(' AND '), bindings: conds.flatMap((c) => c.bindings) };
  });
  const f = orJoin(parts);
  return exists('idx_composite', def.code, f.sql, f.bindings);
}
