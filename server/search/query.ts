/**
 * Translates FHIR search clauses into SQL over the index tables. Every value reaches SQL only
 * as a bound parameter.
 */
import { registry, SearchParamDef } from '../../resources';
import { badRequest } from '../fhir/errors';
import { parseFhirDate } from './fhir-date';
import { normalizeString } from './normalize';
import { Clause, Prefix, splitPipe, splitPrefix } from './params';

export interface SqlFragment {
  sql: string;
  bindings: any[];
}

const likeEscape = (s: string) => s.replace(/[\\%_]/g, (c) => '\\' + c);

function exists(table: string, param: string, cond: string, bindings: any[]): SqlFragment {
  return {
    sql: `EXISTS (SELECT 1 FROM ${table} i WHERE i.tenant_id = r.tenant_id AND i.res_type = r.res_type AND i.res_id = r.id AND i.param = ? AND (${cond}))`,
    bindings: [param, ...bindings],
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

function dateClause(table: 'idx_date', def: SearchParamDef, clause: Clause): SqlFragment {
  const parts = clause.values.map((v) => {
    const { prefix, rest } = splitPrefix(v);
    let { lo, hi } = dateRangeOf(clause.name, rest);
    if (prefix === 'ap') [lo, hi] = approxDate(lo, hi);
    return rangeCondition(prefix, 'i.lo', 'i.hi', lo, hi);
  });
  const f = orJoin(parts);
  return exists(table, def.code, f.sql, f.bindings);
}

export function lastUpdatedClause(clause: Clause): SqlFragment {
  const parts = clause.values.map((v) => {
    const { prefix, rest } = splitPrefix(v);
    let { lo, hi } = dateRangeOf(clause.name, rest);
    if (prefix === 'ap') [lo, hi] = approxDate(lo, hi);
    return rangeCondition(prefix, 'r.last_updated', "(r.last_updated + interval '1 millisecond')", lo, hi);
  });
  return orJoin(parts);
}

function parseNumber(param: string, s: string): { n: number; lo: number; hi: number } {
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(s)) {
    throw badRequest(`Invalid number "${s}" for search parameter "${param}"`, [param]);
  }
  const n = Number(s);
  const dot = s.indexOf('.');
  const decimals = dot < 0 || /[eE]/.test(s) ? 0 : s.length - dot - 1;
  const half = 0.5 * Math.pow(10, -decimals);
  return { n, lo: n - half, hi: n + half };
}

function numberCondition(prefix: Prefix, col: string, num: { n: number; lo: number; hi: number }): SqlFragment {
  switch (prefix) {
    case 'eq':
      return { sql: `${col} >= ? AND ${col} < ?`, bindings: [num.lo, num.hi] };
    case 'ne':
      return { sql: `NOT (${col} >= ? AND ${col} < ?)`, bindings: [num.lo, num.hi] };
    case 'gt':
    case 'sa':
      return { sql: `${col} > ?`, bindings: [num.n] };
    case 'lt':
    case 'eb':
      return { sql: `${col} < ?`, bindings: [num.n] };
    case 'ge':
      return { sql: `${col} >= ?`, bindings: [num.n] };
    case 'le':
      return { sql: `${col} <= ?`, bindings: [num.n] };
    case 'ap': {
      const d = Math.abs(num.n) * 0.1;
      return { sql: `${col} >= ? AND ${col} <= ?`, bindings: [num.n - d, num.n + d] };
    }
  }
}

function tokenClause(def: SearchParamDef, clause: Clause): SqlFragment {
  const mod = clause.modifier;
  const parts = clause.values.map((v): SqlFragment => {
    if (mod === 'text') return { sql: `i.display LIKE ?`, bindings: [likeEscape(normalizeString(v)) + '%'] };
    if (!v.includes('|')) return { sql: `i.code = ?`, bindings: [v] };
    const [system, code] = splitPipe(v);
    if (system === '') return { sql: `i.system IS NULL AND i.code = ?`, bindings: [code] };
    if (code === '' || code === undefined) return { sql: `i.system = ?`, bindings: [system] };
    return { sql: `i.system = ? AND i.code = ?`, bindings: [system, code] };
  });
  const f = orJoin(parts);
  const e = exists('idx_token', def.code, f.sql, f.bindings);
  return mod === 'not' ? { sql: `NOT ${e.sql}`, bindings: e.bindings } : e;
}

function stringClause(def: SearchParamDef, clause: Clause): SqlFragment {
  const parts = clause.values.map((v): SqlFragment => {
    if (clause.modifier === 'exact') return { sql: `i.exact = ?`, bindings: [v] };
    const n = likeEscape(normalizeString(v));
    if (clause.modifier === 'contains') return { sql: `i.value LIKE ?`, bindings: ['%' + n + '%'] };
    return { sql: `i.value LIKE ?`, bindings: [n + '%'] };
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
  const parts = clause.values.map((v): SqlFragment => {
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

function referenceClause(def: SearchParamDef, clause: Clause, baseUrl: string): SqlFragment {
  const mod = clause.modifier;
  const parts = clause.values.map((v): SqlFragment => {
    if (mod === 'identifier') {
      const [system, value] = v.includes('|') ? splitPipe(v) : ['', v];
      return { sql: `i.url = ?`, bindings: [`identifier:${system}|${value}`] };
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

const TABLE_OF: Record<string, string> = {
  string: 'idx_string',
  token: 'idx_token',
  date: 'idx_date',
  number: 'idx_number',
  quantity: 'idx_quantity',
  reference: 'idx_reference',
  uri: 'idx_uri',
};

const MODIFIERS: Record<string, string[]> = {
  string: ['exact', 'contains', 'missing'],
  token: ['not', 'text', 'missing'],
  date: ['missing'],
  number: ['missing'],
  quantity: ['missing'],
  reference: ['identifier', 'missing'],
  uri: ['below', 'above', 'missing'],
};

export function isSupportedParam(def: SearchParamDef): boolean {
  return Boolean(TABLE_OF[def.type]) && Boolean(def.expression);
}

/** SQL condition (over `resources r`) for one clause of a search on `def`. */
export function clauseSql(def: SearchParamDef, clause: Clause, baseUrl: string): SqlFragment {
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
      return tokenClause(def, clause);
    case 'date':
      return dateClause('idx_date', def, clause);
    case 'number':
      return numberClause(def, clause);
    case 'quantity':
      return quantityClause(def, clause);
    case 'reference':
      return referenceClause(def, clause, baseUrl);
    case 'uri':
      return uriClause(def, clause);
    default:
      throw badRequest(`Search parameter "${clause.name}" of type ${def.type} is not supported`, [clause.raw]);
  }
}
