/**
 * One search parameter (key=value) as an SQL condition over `resources r`, including chained
 * parameters (`subject:Patient.name=x`, several levels) and reverse chaining
 * (`_has:Observation:patient:code=x`). Nested subqueries alias their resource row `r` again, so
 * every inner condition refers to the nearest `r`.
 */
import { registry, SearchParamDef } from '../../resources';
import { badRequest } from '../fhir/errors';
import { Clause, parseClause } from './params';
import { ClauseContext, clauseSql, isSupportedParam, lastUpdatedClause, SqlFragment } from './query';

const MAX_DEPTH = 4;

/** A parameter the server does not know or support (lenient search ignores it with a warning). */
export class UnknownParameter extends Error {}

function referenceParam(type: string, code: string, key: string): SearchParamDef {
  const p = registry.get(type)?.searchParams.get(code);
  if (!p) throw new UnknownParameter(`Unknown search parameter "${code}" for ${type} (in "${key}")`);
  if (p.type !== 'reference') throw badRequest(`"${code}" on ${type} is not a reference parameter, so it cannot be chained (in "${key}")`, [key]);
  return p;
}

/**
 * The ids of the live `type` resources that match `inner`, as an uncorrelated query (Postgres runs
 * it once): read through the inner condition's own index when it has one (index rows exist only
 * for live resources), otherwise by a scan of that type's resources.
 */
function idsMatching(type: string, inner: SqlFragment, tenant: string): SqlFragment {
  const d = inner.driver;
  if (d) {
    const a = d.alias;
    return { sql: `SELECT ${a}.res_id FROM ${d.table} ${a} WHERE ${a}.tenant_id = ? AND ${a}.res_type = ? AND ${d.cond.sql}`, bindings: [tenant, type, ...d.cond.bindings] };
  }
  return { sql: `SELECT r.id FROM resources r WHERE r.tenant_id = ? AND r.res_type = ? AND r.deleted = false AND (${inner.sql})`, bindings: [tenant, type, ...inner.bindings] };
}

function chained(type: string, key: string, value: string, baseUrl: string, depth: number, ctx: ClauseContext): SqlFragment {
  const dot = key.indexOf('.');
  const head = key.slice(0, dot);
  const tail = key.slice(dot + 1);
  const [code, targetType] = head.split(':');
  const ref = referenceParam(type, code, key);
  let targets = targetType ? [targetType] : (ref.target ?? []);
  if (targetType && !registry.has(targetType)) throw badRequest(`Unknown resource type "${targetType}" in chain "${key}"`, [key]);
  const tailName = tail.split(/[.:]/)[0];
  // Without a type modifier, chain into every target type that has the next parameter.
  targets = targets.filter((t) => tailName === '_id' || tailName === '_lastUpdated' || tailName === '_has' || registry.get(t)?.searchParams.has(tailName));
  if (!targets.length) throw new UnknownParameter(`No target of ${type}.${code} has a search parameter "${tailName}" (in "${key}")`);
  const parts = targets.map((t): SqlFragment => {
    const inner = condition(t, tail, value, baseUrl, depth + 1, ctx);
    // the reference row's own condition: its parameter, target type and a live target that matches
    // (with the tenant known: the matching targets' ids first, then the reference index by them)
    const targetsSql = ctx.tenant ? idsMatching(t, inner, ctx.tenant) : undefined;
    const own = targetsSql
      ? `ci.param = ? AND ci.target_type = ? AND ci.target_id = ANY(ARRAY(${targetsSql.sql}))`
      : `ci.param = ? AND ci.target_type = ?
              AND EXISTS (SELECT 1 FROM resources r WHERE r.tenant_id = ci.tenant_id AND r.res_type = ci.target_type
                            AND r.id = ci.target_id AND r.deleted = false AND (${inner.sql}))`;
    const bindings = [code, t, ...(targetsSql ? targetsSql.bindings : inner.bindings)];
    return {
      sql: `EXISTS (SELECT 1 FROM idx_reference ci WHERE ci.tenant_id = r.tenant_id AND ci.res_type = r.res_type AND ci.res_id = r.id
              AND ${own})`,
      bindings,
      // one target type: the reference rows can drive the search (inner ids first, then the reference index)
      driver: { table: 'idx_reference', alias: 'ci', rank: 2, cond: { sql: own, bindings } },
    };
  });
  if (parts.length === 1) return parts[0];
  return { sql: parts.map((p) => `(${p.sql})`).join(' OR '), bindings: parts.flatMap((p) => p.bindings) };
}

function reverseChained(type: string, key: string, value: string, baseUrl: string, depth: number, ctx: ClauseContext): SqlFragment {
  // _has:Observation:patient:code   or   _has:Observation:patient:_has:AuditEvent:entity:agent
  const m = /^_has:([A-Za-z]+):([a-z0-9-]+(?:\[x\])?):(.+)$/.exec(key);
  if (!m) throw badRequest(`_has needs the form _has:Type:reference-parameter:parameter (got "${key}")`, [key]);
  const [, source, code, rest] = m;
  if (!registry.has(source)) throw badRequest(`Unknown resource type "${source}" in "${key}"`, [key]);
  const ref = referenceParam(source, code, key);
  if (ref.target && !ref.target.includes(type)) {
    throw badRequest(`${source}.${code} never refers to a ${type}, so "${key}" cannot match`, [key]);
  }
  const inner = condition(source, rest, value, baseUrl, depth + 1, ctx);
  if (ctx.tenant) {
    // the matching sources' ids first, then the ids they refer to (owner index of idx_reference)
    const sources = idsMatching(source, inner, ctx.tenant);
    return {
      sql: `r.id = ANY(ARRAY(SELECT hi.target_id FROM idx_reference hi WHERE hi.tenant_id = ? AND hi.res_type = ? AND hi.param = ?
              AND hi.target_type = ? AND hi.res_id = ANY(ARRAY(${sources.sql}))))`,
      bindings: [ctx.tenant, source, code, type, ...sources.bindings],
    };
  }
  return {
    sql: `EXISTS (SELECT 1 FROM idx_reference hi WHERE hi.tenant_id = r.tenant_id AND hi.res_type = ? AND hi.param = ?
            AND hi.target_type = r.res_type AND hi.target_id = r.id
            AND EXISTS (SELECT 1 FROM resources r WHERE r.tenant_id = hi.tenant_id AND r.res_type = hi.res_type
                          AND r.id = hi.res_id AND r.deleted = false AND (${inner.sql})))`,
    bindings: [source, code, ...inner.bindings],
  };
}

export function condition(type: string, key: string, value: string, baseUrl: string, depth = 0, ctx: ClauseContext = {}): SqlFragment {
  if (depth > MAX_DEPTH) throw badRequest(`"${key}" chains more than ${MAX_DEPTH} levels deep`, [key]);
  if (key.startsWith('_has:')) return reverseChained(type, key, value, baseUrl, depth, ctx);
  if (key.includes('.')) return chained(type, key, value, baseUrl, depth, ctx);
  const clause: Clause = parseClause(key, value);
  if ((clause.name === '_id' || clause.name === '_lastUpdated') && clause.modifier === 'missing') {
    // Every resource has an id and a lastUpdated: :missing=true matches none, :missing=false all.
    if (value !== 'true' && value !== 'false') throw badRequest(`:missing takes true or false, not "${value}"`, [key]);
    return { sql: value === 'true' ? 'false' : 'true', bindings: [] };
  }
  if (clause.name === '_lastUpdated' && clause.modifier) throw badRequest(`Modifier :${clause.modifier} is not supported on _lastUpdated`, [key]);
  if (clause.name === '_id') {
    if (clause.modifier) throw badRequest(`Modifier :${clause.modifier} is not supported on _id`, [key]);
    if (clause.values.some((v) => v === '')) throw badRequest('_id has an empty value', [key]);
    return { sql: `r.id = ANY(?)`, bindings: [clause.values] };
  }
  if (clause.name === '_lastUpdated') return lastUpdatedClause(clause);
  const p = registry.get(type)?.searchParams.get(clause.name);
  if (!p) throw new UnknownParameter(`Unknown search parameter "${clause.name}" for ${type}`);
  if (!isSupportedParam(p)) throw new UnknownParameter(`Search parameter "${clause.name}" (type ${p.type}) is not supported on ${type}`);
  return clauseSql(p, clause, baseUrl, ctx);
}
