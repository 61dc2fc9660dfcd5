/**
 * _include and _revinclude (with :iterate, and * wildcards): resources referenced by, or
 * referring to, the page of matches. Returned as search.mode = include.
 */
import type { OperationOutcomeIssue } from 'fhir/r4';
import { registry } from '../../resources';
import type { Tx } from '../db/tenant-tx';
import { badRequest } from '../fhir/errors';
import type { QueryInput } from './params';
import { openRows } from '../crypto/at-rest';

export interface IncludedResource {
  type: string;
  id: string;
  json: string;
}

interface Spec {
  rev: boolean;
  iterate: boolean;
  source: string | '*';
  param: string | '*';
  target?: string;
  raw: [string, string];
}

const MAX_INCLUDED = 1000;
const MAX_ITERATIONS = 5;

export function parseIncludes(params: QueryInput, warnings: OperationOutcomeIssue[], strict: boolean): Spec[] {
  const specs: Spec[] = [];
  for (const [key, value] of params) {
    const [name, mod] = key.split(':');
    if (name !== '_include' && name !== '_revinclude') continue;
    if (mod && mod !== 'iterate' && mod !== 'recurse') throw badRequest(`Unknown modifier "${mod}" on ${name}`, [key]);
    const rev = name === '_revinclude';
    const iterate = Boolean(mod);
    for (const v of value.split(',')) {
      if (v === '*') {
        specs.push({ rev, iterate, source: '*', param: '*', raw: [key, value] });
        continue;
      }
      const [source, param, target] = v.split(':');
      const problem = (msg: string) => {
        if (strict) throw badRequest(msg, [key]);
        warnings.push({ severity: 'warning', code: 'not-supported', diagnostics: `${msg}; it was ignored`, expression: [key] });
      };
      if (!source || !param) {
        problem(`${name}=${v} must be SourceType:parameter[:TargetType]`);
        continue;
      }
      if (!registry.has(source)) {
        problem(`${name}=${v}: unknown resource type "${source}"`);
        continue;
      }
      if (param !== '*') {
        const p = registry.get(source)!.searchParams.get(param);
        if (!p || p.type !== 'reference') {
          problem(`${name}=${v}: "${param}" is not a reference search parameter of ${source}`);
          continue;
        }
      }
      if (target && !registry.has(target)) {
        problem(`${name}=${v}: unknown target type "${target}"`);
        continue;
      }
      specs.push({ rev, iterate, source, param, target, raw: [key, value] });
    }
  }
  return specs;
}

interface Ref {
  type: string;
  id: string;
}

async function forwardRefs(tx: Tx, spec: Spec, frontier: Ref[]): Promise<Ref[]> {
  const sources = frontier.filter((f) => spec.source === '*' || f.type === spec.source);
  if (!sources.length) return [];
  const where = ['tenant_id = ?', 'res_type = ANY(?)', 'res_id = ANY(?)', 'target_type IS NOT NULL'];
  const bindings: any[] = [tx.tenant, [...new Set(sources.map((s) => s.type))], [...new Set(sources.map((s) => s.id))]];
  if (spec.param !== '*') {
    where.push('param = ?');
    bindings.push(spec.param);
  }
  if (spec.target) {
    where.push('target_type = ?');
    bindings.push(spec.target);
  }
  const r = await tx.raw(`SELECT DISTINCT res_type, res_id, target_type, target_id FROM idx_reference WHERE ${where.join(' AND ')}`, bindings);
  const wanted = new Set(sources.map((s) => `${s.type}/${s.id}`));
  return (r.rows as Array<{ res_type: string; res_id: string; target_type: string; target_id: string }>)
    .filter((x) => wanted.has(`${x.res_type}/${x.res_id}`))
    .map((x) => ({ type: x.target_type, id: x.target_id }));
}

async function reverseRefs(tx: Tx, spec: Spec, frontier: Ref[]): Promise<Ref[]> {
  if (!frontier.length) return [];
  const where = ['tenant_id = ?', 'target_type = ANY(?)', 'target_id = ANY(?)'];
  const bindings: any[] = [tx.tenant, [...new Set(frontier.map((s) => s.type))], [...new Set(frontier.map((s) => s.id))]];
  if (spec.source !== '*') {
    where.push('res_type = ?');
    bindings.push(spec.source);
  }
  if (spec.param !== '*') {
    where.push('param = ?');
    bindings.push(spec.param);
  }
  const r = await tx.raw(`SELECT DISTINCT res_type, res_id, target_type, target_id FROM idx_reference WHERE ${where.join(' AND ')}`, bindings);
  const wanted = new Set(frontier.map((s) => `${s.type}/${s.id}`));
  return (r.rows as Array<{ res_type: string; res_id: string; target_type: string; target_id: string }>)
    .filter((x) => wanted.has(`${x.target_type}/${x.target_id}`) && (!spec.target || x.target_type === spec.target))
    .map((x) => ({ type: x.res_type, id: x.res_id }));
}

async function fetchResources(tx: Tx, refs: Ref[]): Promise<IncludedResource[]> {
  if (!refs.length) return [];
  const r = await tx.raw(
    `SELECT r.res_type, r.id, r.content::text AS json
       FROM unnest(?::text[], ?::text[]) AS w(t, i)
       JOIN resources r ON r.tenant_id = ? AND r.res_type = w.t AND r.id = w.i AND r.deleted = false`,
    [refs.map((x) => x.type), refs.map((x) => x.id), tx.tenant],
  );
  const rows = (r.rows as Array<{ res_type: string; id: string; json: string }>).map((x) => ({ type: x.res_type, id: x.id, json: x.json }));
  return openRows(tx, rows, (x) => x.type, (x) => x.id);
}

/** Resolves the include specs against the page of matches. */
export async function resolveIncludes(tx: Tx, specs: Spec[], matches: Ref[], warnings: OperationOutcomeIssue[]): Promise<IncludedResource[]> {
  if (!specs.length || !matches.length) return [];
  const seen = new Set(matches.map((m) => `${m.type}/${m.id}`));
  const out: IncludedResource[] = [];
  let frontier: Ref[] = matches;
  for (let round = 0; round <= MAX_ITERATIONS && frontier.length; round++) {
    const active = specs.filter((s) => round === 0 || s.iterate);
    if (!active.length) break;
    const found: Ref[] = [];
    for (const spec of active) {
      const refs = spec.rev ? await reverseRefs(tx, spec, frontier) : await forwardRefs(tx, spec, frontier);
      for (const ref of refs) {
        const k = `${ref.type}/${ref.id}`;
        if (seen.has(k)) continue;
        seen.add(k);
        found.push(ref);
      }
    }
    if (out.length + found.length > MAX_INCLUDED) {
      warnings.push({ severity: 'warning', code: 'too-costly', diagnostics: `More than ${MAX_INCLUDED} included resources; the rest were left out` });
      found.length = Math.max(0, MAX_INCLUDED - out.length);
    }
    const fetched = await fetchResources(tx, found);
    out.push(...fetched);
    frontier = fetched.map((f) => ({ type: f.type, id: f.id }));
    if (out.length >= MAX_INCLUDED) break;
  }
  return out;
}
