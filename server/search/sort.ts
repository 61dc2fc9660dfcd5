/**
 * _sort on _lastUpdated, _id or any indexed parameter (several keys, `-` for descending), with
 * keyset paging: each key is an SQL expression with a sentinel for "no value" so that missing
 * values sort last in both directions, and the cursor carries the last row's key values.
 */
import { registry } from '../../resources';
import type { OperationOutcomeIssue } from 'fhir/r4';
import { FhirError } from '../fhir/errors';
import type { SqlFragment } from './query';

export interface SortKey {
  name: string;
  desc: boolean;
  /** SQL expression over `r` (with bindings). */
  expr: SqlFragment;
  /** SQL type for casting cursor values. */
  sqlType: 'text' | 'timestamptz' | 'numeric';
}

const TABLE: Record<string, { table: string; col: string; sqlType: SortKey['sqlType'] }> = {
  string: { table: 'idx_string', col: 'value', sqlType: 'text' },
  token: { table: 'idx_token', col: 'code', sqlType: 'text' },
  uri: { table: 'idx_uri', col: 'value', sqlType: 'text' },
  reference: { table: 'idx_reference', col: 'target_id', sqlType: 'text' },
  date: { table: 'idx_date', col: 'lo', sqlType: 'timestamptz' },
  number: { table: 'idx_number', col: 'value', sqlType: 'numeric' },
  quantity: { table: 'idx_quantity', col: 'value', sqlType: 'numeric' },
};

const SENTINEL: Record<SortKey['sqlType'], [string, string]> = {
  // [ascending: sorts after everything, descending: sorts after everything]
  text: [`chr(1114111)`, `''`],
  timestamptz: [`'infinity'::timestamptz`, `'-infinity'::timestamptz`],
  numeric: [`'Infinity'::numeric`, `'-Infinity'::numeric`],
};

/**
 * Parses _sort. An unknown or unsortable parameter is an error with `Prefer: handling=strict`;
 * otherwise it is left out with a warning (like any unknown search parameter).
 */
export function parseSort(type: string, raw: string | undefined, strict = true, warnings: OperationOutcomeIssue[] = []): { keys: SortKey[]; applied?: string } {
  const keys: SortKey[] = [];
  const used: string[] = [];
  const reject = (status: number, msg: string) => {
    if (strict) throw FhirError.of(status, status === 400 ? 'not-supported' : 'invalid', msg, ['_sort']);
    warnings.push({ severity: 'warning', code: 'not-supported', diagnostics: `${msg}; it was ignored`, expression: ['_sort'] });
  };
  for (const part of (raw ?? '_lastUpdated').split(',').map((s) => s.trim()).filter(Boolean)) {
    const desc = part.startsWith('-');
    const name = desc ? part.slice(1) : part;
    if (name === '_lastUpdated') {
      keys.push({ name, desc, expr: { sql: 'r.last_updated', bindings: [] }, sqlType: 'timestamptz' });
      used.push(part);
      continue;
    }
    if (name === '_id') {
      keys.push({ name, desc, expr: { sql: 'r.id COLLATE "C"', bindings: [] }, sqlType: 'text' });
      used.push(part);
      continue;
    }
    const p = registry.get(type)?.searchParams.get(name);
    if (!p) {
      reject(400, `_sort: unknown search parameter "${name}" for ${type}`);
      continue;
    }
    const t = TABLE[p.type];
    if (!t || !p.expression) {
      reject(400, `_sort: parameter "${name}" (type ${p.type}) cannot be sorted on`);
      continue;
    }
    used.push(part);
    const agg = desc ? 'max' : 'min';
    const collate = t.sqlType === 'text' ? ' COLLATE "C"' : '';
    const sentinel = SENTINEL[t.sqlType][desc ? 1 : 0];
    keys.push({
      name,
      desc,
      sqlType: t.sqlType,
      expr: {
        sql: `COALESCE((SELECT ${agg}(s.${t.col}${collate}) FROM ${t.table} s WHERE s.tenant_id = r.tenant_id AND s.res_type = r.res_type AND s.res_id = r.id AND s.param = ?), ${sentinel}${collate})`,
        bindings: [name],
      },
    });
  }
  const applied = raw !== undefined && used.length ? used.join(',') : undefined;
  if (!keys.length) keys.push({ name: '_lastUpdated', desc: false, expr: { sql: 'r.last_updated', bindings: [] }, sqlType: 'timestamptz' });
  return { keys, applied };
}

export function orderBy(keys: SortKey[]): SqlFragment {
  return {
    sql: [...keys.map((k, i) => `k${i} ${k.desc ? 'DESC' : 'ASC'}`), 'r.id COLLATE "C" ASC'].join(', '),
    bindings: [],
  };
}

/** Rows strictly after the cursor position: (k0 > v0) OR (k0 = v0 AND k1 > v1) ... OR (all equal AND id > last). */
export function afterCursor(keys: SortKey[], values: Array<string | null>, lastId: string): SqlFragment {
  const exprs = keys.map((k) => k.expr);
  const ors: string[] = [];
  const bindings: any[] = [];
  for (let i = 0; i <= keys.length; i++) {
    const ands: string[] = [];
    for (let j = 0; j < i; j++) {
      ands.push(`${exprs[j].sql} = ?::${keys[j].sqlType}`);
      bindings.push(...exprs[j].bindings, values[j]);
    }
    if (i < keys.length) {
      ands.push(`${exprs[i].sql} ${keys[i].desc ? '<' : '>'} ?::${keys[i].sqlType}`);
      bindings.push(...exprs[i].bindings, values[i]);
    } else {
      ands.push(`r.id COLLATE "C" > ?`);
      bindings.push(lastId);
    }
    ors.push(`(${ands.join(' AND ')})`);
  }
  return { sql: `(${ors.join(' OR ')})`, bindings };
}
