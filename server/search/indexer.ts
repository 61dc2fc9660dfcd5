/**
 * Extracts search index rows from a resource, using the official SearchParameter FHIRPath
 * expressions (compiled once per type and parameter) and writes them in the caller's transaction.
 */
import fhirpath from 'fhirpath';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const r4Model = require('fhirpath/fhir-context/r4');
import type { FhirResource as Resource } from 'fhir/r4';
import { registry, SearchParamDef, SearchParamType } from '../../resources';
import type { Tx } from '../db/tenant-tx';
import { compositeComponents, MAX_COMPONENTS } from './composite';
import { MAX_DATE, MIN_DATE, parseFhirDate } from './fhir-date';
import { normalizeString } from './normalize';
import { compileComponent, compileItems, compilePath } from './path-extract';
import { DATE_SPAN_MS } from './date-span';
import type { BlindIndex } from '../crypto/blind-index';
import { isEncryptedSystem } from '../crypto/policy';

export const INDEX_TABLES = [
  'idx_string', 'idx_token', 'idx_date', 'idx_number', 'idx_quantity', 'idx_reference', 'idx_uri', 'idx_composite',
] as const;
export type IndexTable = (typeof INDEX_TABLES)[number];

type Row = Record<string, unknown>;
export type IndexRows = Partial<Record<IndexTable, Row[]>>;

interface CompiledPart {
  fn: (r: unknown) => unknown[];
  /** The same with `(X as T)` read as `X.ofType(T)`, for resources where `as` meets several items. */
  lenient?: (r: unknown) => unknown[];
  /** From `.where(resolve() is X)`: keep only references to these types. */
  targetFilter?: string;
}

interface CompiledParam {
  def: SearchParamDef;
  parts: CompiledPart[];
}

/** The index table of each search parameter type. */
export const TABLE_OF: Record<string, IndexTable> = {
  string: 'idx_string',
  token: 'idx_token',
  date: 'idx_date',
  number: 'idx_number',
  quantity: 'idx_quantity',
  reference: 'idx_reference',
  uri: 'idx_uri',
};

/** Params answered from columns of the resources table, not index rows. */
const COLUMN_PARAMS = new Set(['_id', '_lastUpdated']);

const compiled = new Map<string, CompiledParam[]>();

function splitUnion(expr: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  let quote = false;
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (c === "'" && expr[i - 1] !== '\\') quote = !quote;
    if (!quote) {
      if (c === '(') depth++;
      else if (c === ')') depth--;
      else if (c === '|' && depth === 0) {
        parts.push(cur.trim());
        cur = '';
        continue;
      }
    }
    cur += c;
  }
  if (cur.trim()) parts.push(cur.trim());
  return parts;
}

function compilePart(expr: string): CompiledPart | undefined {
  let targetFilter: string | undefined;
  const src = expr.replace(/\.where\(resolve\(\) is (\w+)\)/g, (_m, t: string) => {
    targetFilter = t;
    return '';
  });
  const direct = compilePath(src);
  if (direct) return { fn: direct, targetFilter };
  try {
    const fn = fhirpath.compile(src, r4Model) as unknown as (r: unknown) => unknown[];
    // `(X as T)` throws when X has several items (e.g. Observation.component.value of a blood
    // pressure); R5 corrected those expressions to `X.ofType(T)`, used here as the fallback.
    const lenientSrc = src.replace(/\(([A-Za-z][\w.]*) as (\w+)\)/g, '$1.ofType($2)');
    const lenient = lenientSrc !== src ? (fhirpath.compile(lenientSrc, r4Model) as unknown as (r: unknown) => unknown[]) : undefined;
    return { fn, lenient, targetFilter };
  } catch {
    return undefined; // expressions fhirpath.js cannot compile are simply not indexed
  }
}

export function compiledParams(type: string): CompiledParam[] {
  let list = compiled.get(type);
  if (list) return list;
  list = [];
  const def = registry.get(type);
  for (const p of def?.searchParams.values() ?? []) {
    if (!TABLE_OF[p.type] || !p.expression || COLUMN_PARAMS.has(p.code)) continue;
    const parts = splitUnion(p.expression)
      .map(compilePart)
      .filter((x): x is CompiledPart => Boolean(x));
    if (parts.length) list.push({ def: p, parts });
  }
  compiled.set(type, list);
  return list;
}

// ---- value extraction per parameter type -------------------------------------------------

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function stringValues(v: unknown, out: string[]): void {
  if (typeof v === 'string') out.push(v);
  else if (Array.isArray(v)) v.forEach((x) => stringValues(x, out));
  else if (isObj(v)) {
    for (const [k, x] of Object.entries(v)) {
      if (k === 'extension' || k === 'id' || k === 'use' || k === 'period' || k === 'type') continue;
      stringValues(x, out);
    }
  }
}

type TypeCoding = { system: string | null; code: string | null };

function tokenRows(
  v: unknown,
  push: (system: string | null, code: string | null, display?: string | null, type?: TypeCoding) => void,
  blind?: BlindIndex,
): void {
  if (typeof v === 'string') push(null, v);
  else if (typeof v === 'boolean' || typeof v === 'number') push(null, String(v));
  else if (isObj(v)) {
    if (Array.isArray(v.coding) || (typeof v.text === 'string' && !('value' in v) && !('code' in v))) {
      // CodeableConcept (also one with only a text, for :text)
      for (const c of (v.coding ?? []) as Obj[]) {
        if (isObj(c)) push((c.system as string) ?? null, (c.code as string) ?? null, (c.display as string) ?? null);
      }
      if (typeof v.text === 'string') push(null, null, v.text);
    } else if ('value' in v && typeof v.value === 'string') {
      // Identifier, ContactPoint
      const display = isObj(v.type) && typeof v.type.text === 'string' ? v.type.text : null;
      // Identifier.type: one row per type coding, so that :of-type matches type and value together.
      const types = isObj(v.type) && Array.isArray(v.type.coding) ? (v.type.coding as unknown[]).filter(isObj) : [];
      // an encrypted identifier (crypto/policy.ts) is indexed by its blind hash, never in clear
      const value = blind && isEncryptedSystem(v.system) ? blind(v.value, v.system) : v.value;
      if (!types.length) push((v.system as string) ?? null, value, display);
      for (const t of types) {
        push((v.system as string) ?? null, value, display, { system: (t.system as string) ?? null, code: (t.code as string) ?? null });
      }
    } else if ('code' in v || 'system' in v) {
      push((v.system as string) ?? null, (v.code as string) ?? null, (v.display as string) ?? null);
    }
  }
}

function dateRanges(v: unknown, out: Array<[Date, Date]>): void {
  if (typeof v === 'string') {
    const r = parseFhirDate(v);
    if (r) out.push([r.lo, r.hi]);
  } else if (isObj(v)) {
    if ('start' in v || 'end' in v) {
      const s = typeof v.start === 'string' ? parseFhirDate(v.start) : undefined;
      const e = typeof v.end === 'string' ? parseFhirDate(v.end) : undefined;
      out.push([s?.lo ?? MIN_DATE, e?.hi ?? MAX_DATE]);
    } else if (Array.isArray(v.event)) {
      v.event.forEach((x) => dateRanges(x, out));
      if (isObj(v.repeat) && isObj(v.repeat.boundsPeriod)) dateRanges(v.repeat.boundsPeriod, out);
    }
  }
}

function decimalRange(n: number, raw?: string): [number, number] {
  // Implicit precision: 100 matches [99.5, 100.5); 1.50 matches [1.495, 1.505).
  const s = raw ?? String(n);
  const dot = s.indexOf('.');
  const decimals = dot < 0 ? 0 : s.length - dot - 1;
  const half = 0.5 * Math.pow(10, -decimals);
  return [n - half, n + half];
}

function parseReference(ref: string, base?: string): { type: string | null; id: string | null; url: string } {
  let r = ref;
  if (base && r.startsWith(base + '/')) r = r.slice(base.length + 1);
  const m = /^(?:.*\/)?([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(r);
  if (m && !/^[a-z]+:/.test(r)) return { type: m[1], id: m[2], url: ref };
  // Absolute URL of another server: not one of ours, so only an exact URL search matches it.
  // (Without a known base, keep type/id for matching, url for exact.)
  if (m && base) return { type: null, id: null, url: ref };
  if (m) return { type: m[1], id: m[2], url: ref };
  return { type: null, id: null, url: ref };
}

function pgTimestamp(d: Date): string {
  const y = d.getUTCFullYear();
  if (d.getTime() <= MIN_DATE.getTime() || y < 1) return '-infinity';
  if (d.getTime() >= MAX_DATE.getTime() || y > 9999) return 'infinity';
  return d.toISOString();
}

/**
 * Collects one parameter's rows without duplicates. A class, not closures made per parameter:
 * the server runs under tsx, which names every closure it creates (a measurable cost here).
 */
class RowSink {
  private seen = new Set<string>();
  private list: Row[] = [];
  private param = '';
  reset(param: string, list: Row[]): void {
    this.param = param;
    this.list = list;
    this.seen.clear();
  }
  readonly add = (row: Row): void => {
    let k = '';
    for (const key in row) {
      const v = row[key];
      k += v === null || v === undefined ? '\u0001' : typeof v === 'string' ? 's' + v : typeof v + String(v);
      k += '\u0000';
    }
    if (this.seen.has(k)) return;
    this.seen.add(k);
    row.param = this.param;
    this.list.push(row);
  };
}

/** idx_date.span (migrations/006): 0 = at most a day, 1 = at most 366 days, 2 = longer or open. */
function spanClass(lo: Date, hi: Date): number {
  if (pgTimestamp(lo).endsWith('infinity') || pgTimestamp(hi).endsWith('infinity')) return DATE_SPAN_MS.length;
  const ms = hi.getTime() - lo.getTime();
  const k = DATE_SPAN_MS.findIndex((max) => ms <= max);
  return k < 0 ? DATE_SPAN_MS.length : k;
}

export function extractIndexRows(resource: Resource, opts: { baseUrl?: string; blind?: BlindIndex } = {}): IndexRows {
  const rows: IndexRows = {};
  const type = resource.resourceType;
  const sink = new RowSink();
  for (const { def, parts } of compiledParams(type)) {
    const table = TABLE_OF[def.type];
    const list = (rows[table] ??= []);
    sink.reset(def.code, list);
    const add = sink.add;
    for (const part of parts) {
      let values: unknown[];
      try {
        values = part.fn(resource);
      } catch {
        try {
          values = part.lenient?.(resource) ?? [];
        } catch {
          continue;
        }
      }
      for (const v of values) {
        switch (def.type) {
          case 'string': {
            const strs: string[] = [];
            stringValues(v, strs);
            for (const s of strs) add({ value: normalizeString(s), exact: s });
            break;
          }
          case 'token':
            tokenRows(v, (system, code, display, t) =>
              add({
                system,
                code,
                display: display ? normalizeString(display) : null,
                ...(t ? { type_system: t.system, type_code: t.code } : {}),
              }),
              opts.blind,
            );
            break;
          case 'date': {
            const ranges: Array<[Date, Date]> = [];
            dateRanges(v, ranges);
            for (const [lo, hi] of ranges) add({ lo: pgTimestamp(lo), hi: pgTimestamp(hi), span: spanClass(lo, hi) });
            break;
          }
          case 'number':
            if (typeof v === 'number') {
              const [lo, hi] = decimalRange(v);
              add({ value: v, lo, hi });
            }
            break;
          case 'quantity':
            if (isObj(v) && typeof v.value === 'number') {
              const [lo, hi] = decimalRange(v.value);
              add({
                system: (v.system as string) ?? null,
                code: (v.code as string) ?? (v.currency as string) ?? null,
                unit: (v.unit as string) ?? null,
                value: v.value,
                lo,
                hi,
              });
            }
            break;
          case 'reference': {
            let ref: string | undefined;
            if (typeof v === 'string') ref = v; // canonical / uri
            else if (isObj(v) && typeof v.reference === 'string') ref = v.reference;
            if (isObj(v) && isObj(v.identifier)) {
              // Reference.identifier (with or without a literal reference): searchable through :identifier
              const idf = v.identifier as Obj;
              const value = opts.blind && isEncryptedSystem(idf.system) && typeof idf.value === 'string' ? opts.blind(idf.value, idf.system) : (idf.value ?? '');
              add({ target_type: null, target_id: null, url: `identifier:${idf.system ?? ''}|${value}` });
            }
            if (!ref) break;
            if (ref.startsWith('#')) break; // contained
            const p = parseReference(ref, opts.baseUrl);
            if (part.targetFilter && p.type !== part.targetFilter) break;
            add({ target_type: p.type, target_id: p.id, url: p.url });
            break;
          }
          case 'uri':
            if (typeof v === 'string') add({ value: v });
            break;
        }
      }
    }
    if (!list.length) delete rows[table];
  }
  const composite = compositeRows(resource, opts.baseUrl, opts.blind);
  if (composite.length) rows.idx_composite = composite;
  return rows;
}

// ---- composite parameters ------------------------------------------------------------------

interface CompiledComposite {
  def: SearchParamDef;
  items: (r: unknown) => unknown[];
  components: Array<{ type: SearchParamType; fn: (item: unknown, env: Record<string, unknown>) => unknown[] }>;
}

const compiledComposite = new Map<string, CompiledComposite[]>();

function compiledComposites(type: string): CompiledComposite[] {
  let list = compiledComposite.get(type);
  if (list) return list;
  list = [];
  for (const def of registry.get(type)?.searchParams.values() ?? []) {
    const comps = compositeComponents(def);
    if (!comps) continue;
    try {
      // plain item and component paths are walked directly (checked against fhirpath.js in
      // test/path-extract.test.ts); the rest goes through fhirpath.js
      // (all or nothing: fhirpath.js components need the items fhirpath.js produced)
      const items = compileItems(def.expression!);
      const direct = items && comps.map((c) => compileComponent(items.itemPaths, c.expression));
      if (items && direct && direct.every(Boolean)) {
        list.push({ def, items: items.fn, components: comps.map((c, k) => ({ type: c.def.type, fn: direct[k]! })) });
        continue;
      }
      list.push({
        def,
        items: fhirpath.compile(def.expression!, r4Model) as unknown as CompiledComposite['items'],
        components: comps.map((c) => ({
          type: c.def.type,
          fn: fhirpath.compile(c.expression, r4Model) as unknown as CompiledComposite['components'][number]['fn'],
        })),
      });
    } catch {
      // an expression fhirpath.js cannot compile: the parameter is simply not indexed
    }
  }
  compiledComposite.set(type, list);
  return list;
}

/** Slot columns of idx_composite (see migrations/002_composite.ts for what each type uses). */
type Slot = { system?: string | null; code?: string | null; text?: string | null; num?: number | null; nlo?: number | null; nhi?: number | null; dlo?: string; dhi?: string };

const numOrNull = (v: unknown) => (isObj(v) && typeof v.value === 'number' ? v.value : null);

/** The values one component takes on one item, as slot column values. */
function componentSlots(type: SearchParamType, values: unknown[], baseUrl?: string, blind?: BlindIndex): Slot[] {
  const out: Slot[] = [];
  for (const v of values) {
    switch (type) {
      case 'token':
        tokenRows(
          v,
          (system, code) => {
            if (code !== null) out.push({ system, code });
          },
          blind,
        );
        break;
      case 'quantity':
        if (isObj(v) && typeof v.value === 'number') {
          out.push({ system: (v.system as string) ?? null, code: (v.code as string) ?? (v.currency as string) ?? null, text: (v.unit as string) ?? null, num: v.value });
        } else if (isObj(v) && (isObj(v.low) || isObj(v.high))) {
          // Range: its bounds (a missing bound is open); units from the bound that has them
          const q = (isObj(v.low) ? v.low : v.high) as Obj;
          out.push({ system: (q.system as string) ?? null, code: (q.code as string) ?? null, text: (q.unit as string) ?? null, nlo: numOrNull(v.low), nhi: numOrNull(v.high) });
        }
        break;
      case 'number':
        if (typeof v === 'number') out.push({ num: v });
        break;
      case 'date': {
        const ranges: Array<[Date, Date]> = [];
        dateRanges(v, ranges);
        for (const [lo, hi] of ranges) out.push({ dlo: pgTimestamp(lo), dhi: pgTimestamp(hi) });
        break;
      }
      case 'string': {
        const strs: string[] = [];
        stringValues(v, strs);
        for (const s of strs) out.push({ text: normalizeString(s) });
        break;
      }
      case 'reference': {
        const ref = typeof v === 'string' ? v : isObj(v) && typeof v.reference === 'string' ? v.reference : undefined;
        if (!ref || ref.startsWith('#')) break;
        const p = parseReference(ref, baseUrl);
        out.push({ system: p.type, code: p.id, text: p.url });
        break;
      }
      case 'uri':
        if (typeof v === 'string') out.push({ code: v });
        break;
    }
  }
  return out;
}

/** Rows per item and composite: every combination of its components' values (bounded). */
const MAX_ROWS_PER_ITEM = 64;

function compositeRows(resource: Resource, baseUrl?: string, blind?: BlindIndex): Row[] {
  const out: Row[] = [];
  for (const { def, items, components } of compiledComposites(resource.resourceType)) {
    let list: unknown[];
    try {
      list = items(resource);
    } catch {
      continue;
    }
    const seen = new Set<string>();
    for (const item of list) {
      const slots: Slot[][] = [];
      for (const c of components) {
        let values: unknown[];
        try {
          values = c.fn(item, { resource });
        } catch {
          values = [];
        }
        slots.push(componentSlots(c.type, values, baseUrl, blind));
      }
      if (slots.some((s) => !s.length)) continue; // the item lacks a component: it can never match
      let combos: Row[] = [{ param: def.code }];
      slots.forEach((choices, k) => {
        const next: Row[] = [];
        for (const row of combos) {
          for (const slot of choices) {
            if (next.length >= MAX_ROWS_PER_ITEM) break;
            const r = { ...row };
            for (const [col, val] of Object.entries(slot)) r[`c${k + 1}_${col}`] = val;
            next.push(r);
          }
        }
        combos = next;
      });
      for (const r of combos) {
        const key = JSON.stringify(r);
        if (!seen.has(key)) {
          seen.add(key);
          out.push(r);
        }
      }
    }
  }
  return out;
}

/**
 * CTEs that replace the index rows of one resource (delete old, insert new). They are composed
 * into the statement that writes the resource itself, so a write is a single round trip.
 * (Sibling CTEs share one snapshot: the DELETE never sees the rows the INSERTs add.)
 */
export function indexCtes(tenant: string, type: string, id: string, rows: IndexRows | null, replace: boolean): { ctes: string[]; bindings: any[] } {
  const ctes: string[] = [];
  const bindings: any[] = [];
  if (replace) {
    for (const t of INDEX_TABLES) {
      ctes.push(`d_${t} AS (DELETE FROM ${t} WHERE tenant_id = ? AND res_type = ? AND res_id = ?)`);
      bindings.push(tenant, type, id);
    }
  }
  for (const t of INDEX_TABLES) {
    const list = rows?.[t];
    if (!list?.length) continue;
    const types = COLUMN_TYPES[t];
    const cols = Object.keys(types);
    const colDefs = ['param text', ...cols.map((c) => `${c} ${types[c]}`)].join(', ');
    ctes.push(
      `i_${t} AS (INSERT INTO ${t} (tenant_id, res_type, res_id, param, ${cols.join(', ')})
        SELECT ?, ?, ?, x.param, ${cols.map((c) => `x.${c}`).join(', ')}
        FROM json_to_recordset(?::json) AS x(${colDefs}))`,
    );
    bindings.push(tenant, type, id, JSON.stringify(list));
  }
  return { ctes, bindings };
}

/** CTEs inserting index rows of many resources at once (rows carry their own res_type/res_id). */
export function bulkInsertCtes(tenant: string, rowsByTable: Partial<Record<IndexTable, Array<Record<string, unknown>>>>): { ctes: string[]; bindings: any[] } {
  const ctes: string[] = [];
  const bindings: any[] = [];
  for (const t of INDEX_TABLES) {
    const list = rowsByTable[t];
    if (!list?.length) continue;
    const types = COLUMN_TYPES[t];
    const cols = Object.keys(types);
    const colDefs = ['res_type text', 'res_id text', 'param text', ...cols.map((c) => `${c} ${types[c]}`)].join(', ');
    ctes.push(
      `b_${t} AS (INSERT INTO ${t} (tenant_id, res_type, res_id, param, ${cols.join(', ')})
        SELECT ?, x.res_type, x.res_id, x.param, ${cols.map((c) => `x.${c}`).join(', ')}
        FROM json_to_recordset(?::json) AS x(${colDefs}))`,
    );
    bindings.push(tenant, JSON.stringify(list));
  }
  return { ctes, bindings };
}

/** Replaces the index rows of one resource inside the caller's transaction (reindexing). */
export async function writeIndexRows(tx: Tx, type: string, id: string, rows: IndexRows | null, replace: boolean): Promise<void> {
  const { ctes, bindings } = indexCtes(tx.tenant, type, id, rows, replace);
  if (!ctes.length) return;
  await tx.raw(`WITH ${ctes.join(',\n')} SELECT 1`, bindings);
}

/**
 * One statement that replaces the index rows of many resources of one tenant (reindexing):
 * per table, delete the rows of every listed resource and insert the new ones. `rows: null`
 * (a deleted resource) only deletes.
 */
export function bulkIndexSql(tenant: string, entries: Array<{ type: string; id: string; rows: IndexRows | null }>): { sql: string; bindings: any[] } {
  const ctes: string[] = [];
  const bindings: any[] = [];
  const types = entries.map((e) => e.type);
  const ids = entries.map((e) => e.id);
  for (const t of INDEX_TABLES) {
    ctes.push(`d_${t} AS (DELETE FROM ${t} WHERE tenant_id = ? AND (res_type, res_id) IN (SELECT * FROM unnest(?::text[], ?::text[])))`);
    bindings.push(tenant, types, ids);
  }
  const rowsByTable: Partial<Record<IndexTable, Array<Record<string, unknown>>>> = {};
  for (const t of INDEX_TABLES) {
    const list = entries.flatMap((e) => (e.rows?.[t] ?? []).map((r) => ({ res_type: e.type, res_id: e.id, ...r })));
    if (list.length) rowsByTable[t] = list;
  }
  const inserts = bulkInsertCtes(tenant, rowsByTable);
  ctes.push(...inserts.ctes);
  bindings.push(...inserts.bindings);
  return { sql: `WITH ${ctes.join(',\n')} SELECT 1`, bindings };
}

const TEXT = 'text';
export const COLUMN_TYPES: Record<IndexTable, Record<string, string>> = {
  idx_string: { value: TEXT, exact: TEXT },
  idx_token: { system: TEXT, code: TEXT, display: TEXT, type_system: TEXT, type_code: TEXT },
  idx_date: { lo: 'timestamptz', hi: 'timestamptz', span: 'smallint' },
  idx_number: { value: 'numeric', lo: 'numeric', hi: 'numeric' },
  idx_quantity: { system: TEXT, code: TEXT, unit: TEXT, value: 'numeric', lo: 'numeric', hi: 'numeric' },
  idx_reference: { target_type: TEXT, target_id: TEXT, url: TEXT },
  idx_uri: { value: TEXT },
  idx_composite: Object.fromEntries(
    Array.from({ length: MAX_COMPONENTS }, (_, i) => i + 1).flatMap((n) => [
      [`c${n}_system`, TEXT], [`c${n}_code`, TEXT], [`c${n}_text`, TEXT],
      [`c${n}_num`, 'numeric'], [`c${n}_nlo`, 'numeric'], [`c${n}_nhi`, 'numeric'],
      [`c${n}_dlo`, 'timestamptz'], [`c${n}_dhi`, 'timestamptz'],
    ]),
  ),
};
