/**
 * A brute-force, in-memory FHIR R4 search evaluator: the "oracle" the search tests compare the
 * server with. It deliberately shares no code with server/search: it evaluates the official
 * SearchParameter expression (profiles/r4-registry.json) with fhirpath.js over whole resources and
 * applies the matching rules of /work/shared/docs/standards/fhir-search.md (R4 search.html) to the
 * typed values fhirpath returns (FHIR.HumanName, FHIR.Period, FHIR.Identifier, ...).
 *
 * Interpretations where the digest leaves a choice (the server's choice is the reference):
 * - A date/dateTime without a zone is read in the server's zone, UTC.
 * - A stored number or Quantity.value is a point (JSON keeps no trailing zeros); the query's
 *   implicit precision makes the range for eq/ne.
 * - `ap` on numbers/quantities: within 10 % of the value, inclusive. `ap` on dates is
 *   server-defined, so the oracle does not evaluate it (the hand-written tests cover it).
 * - `:missing=true` means "no value for the parameter" (R4: "which usually equates to not having
 *   the relevant element"): a Reference with only a display or only a local `#id`, or a Quantity
 *   without a value, gives no value.
 * - Tokens are case-sensitive (the server's choice; the digest allows it).
 * - A string value that is empty once punctuation is ignored matches nothing.
 */
import fhirpath from 'fhirpath';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const r4Model = require('fhirpath/fhir-context/r4');
import registryJson from '../../profiles/r4-registry.json';

export type ParamType = 'string' | 'token' | 'date' | 'reference' | 'quantity' | 'number' | 'uri';
export const ORACLE_TYPES: ParamType[] = ['string', 'token', 'date', 'reference', 'quantity', 'number', 'uri'];

export interface OracleParam {
  resourceType: string;
  code: string;
  type: string;
  expression?: string;
  target?: string[];
}

/** The official definitions of a resource type, straight from the JSON (not the server's registry). */
export function officialParams(resourceType: string): OracleParam[] {
  const t = (registryJson as unknown as { types: Record<string, { searchParams: OracleParam[] }> }).types[resourceType];
  return (t?.searchParams ?? []).map((p) => ({ ...p, resourceType }));
}

// ---- decimals (exact) -------------------------------------------------------------------------

/** value = m × 10^-s */
export interface Dec {
  m: bigint;
  s: number;
}

export function parseDec(str: string): Dec | undefined {
  const x = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(str.trim());
  if (!x || (!x[2] && !x[3])) return undefined;
  const frac = x[3] ?? '';
  let m = BigInt((x[1] === '-' ? '-' : '') + ((x[2] || '') + frac || '0'));
  let s = frac.length - Number(x[4] ?? 0);
  if (s < 0) {
    m *= 10n ** BigInt(-s);
    s = 0;
  }
  return { m, s };
}

const scaleTo = (d: Dec, s: number) => d.m * 10n ** BigInt(s - d.s);
export function cmpDec(a: Dec, b: Dec): number {
  const s = Math.max(a.s, b.s);
  const x = scaleTo(a, s);
  const y = scaleTo(b, s);
  return x < y ? -1 : x > y ? 1 : 0;
}
const addDec = (a: Dec, b: Dec): Dec => {
  const s = Math.max(a.s, b.s);
  return { m: scaleTo(a, s) + scaleTo(b, s), s };
};
const negDec = (a: Dec): Dec => ({ m: -a.m, s: a.s });
const absDec = (a: Dec): Dec => ({ m: a.m < 0n ? -a.m : a.m, s: a.s });

/**
 * The implicit range of a search number (search.html#number): half a unit of the last digit given,
 * `100` → [99.5, 100.5), `100.00` → [99.995, 100.005). For exponent notation the digest's example
 * `1e2` → [95, 105) is followed: one digit finer than the mantissa.
 */
export function implicitRange(str: string): [Dec, Dec] {
  const n = parseDec(str)!;
  const x = /^[+-]?\d*(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(str.trim())!;
  const fracDigits = (x[1] ?? '').length;
  const exp = x[2] !== undefined ? Number(x[2]) : undefined;
  // half = 5 × 10^(k) with k = -(fracDigits + 1), or for exponent form k = exp - fracDigits - 2
  const k = exp === undefined ? -(fracDigits + 1) : exp - fracDigits - 2;
  const half: Dec = k >= 0 ? { m: 5n * 10n ** BigInt(k), s: 0 } : { m: 5n, s: -k };
  return [addDec(n, negDec(half)), addDec(n, half)];
}

// ---- dates ------------------------------------------------------------------------------------

/** Half-open [lo, hi) in epoch ms; ±Infinity for open ends. */
export type Range = [number, number];

const DATE = /^(-?\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

function utcMs(y: number, mo: number, d: number, h = 0, mi = 0, s = 0, ms = 0): number {
  const dt = new Date(0);
  dt.setUTCFullYear(y, mo, d);
  dt.setUTCHours(h, mi, s, ms);
  return dt.getTime();
}

/** The range a date value covers at its own precision; `instant` values have zero width. */
export function dateRange(value: string, instant = false): Range | undefined {
  const x = DATE.exec(value);
  if (!x) return undefined;
  const y = Number(x[1]);
  if (x[2] === undefined) return [utcMs(y, 0, 1), utcMs(y + 1, 0, 1)];
  const mo = Number(x[2]) - 1;
  if (x[3] === undefined) return [utcMs(y, mo, 1), utcMs(y, mo + 1, 1)];
  const d = Number(x[3]);
  if (x[4] === undefined) return [utcMs(y, mo, d), utcMs(y, mo, d + 1)];
  const zone = x[8];
  const off = !zone || zone === 'Z' ? 0 : (zone[0] === '-' ? -1 : 1) * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6)));
  const fracStr = x[7];
  const ms = fracStr ? Math.floor(Number('0.' + fracStr) * 1000) : 0;
  const lo = utcMs(y, mo, d, Number(x[4]), Number(x[5]), Number(x[6] ?? 0), ms) - off * 60_000;
  if (instant) return [lo, lo + 1]; // zero width, as a 1 ms half-open interval (queries have ms resolution at best)
  const width = x[6] === undefined ? 60_000 : fracStr ? 1 : 1000;
  return [lo, lo + width];
}

// ---- strings ----------------------------------------------------------------------------------

/** Case- and accent-insensitive, punctuation ignored, whitespace runs collapsed (digest §3). */
export function foldString(s: string): string {
  return s
    .normalize('NFD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/\p{P}/gu, '')
    .replace(/\s+/g, ' ')
    .trim();
}

// ---- escaping ---------------------------------------------------------------------------------

/** Splits on an unescaped separator, keeping escapes (`\x`) in the parts. */
function splitUnescaped(value: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    if (value[i] === '\\' && i + 1 < value.length) {
      cur += value[i] + value[i + 1];
      i++;
    } else if (value[i] === sep) {
      out.push(cur);
      cur = '';
    } else cur += value[i];
  }
  out.push(cur);
  return out;
}
const unescapeValue = (v: string) => v.replace(/\\([\\,|$])/g, '$1');
/** Escapes a literal for use in a search value. */
export const escapeValue = (v: string) => v.replace(/[\\,|$]/g, (c) => '\\' + c);

// ---- typed values ---------------------------------------------------------------------------

type Obj = Record<string, any>;

export interface TokenItem {
  kind: 'coding' | 'identifier' | 'contact' | 'primitive';
  system?: string;
  code?: string;
  /** Texts for :text (Coding.display, CodeableConcept.text, Identifier.type.text). */
  text?: string;
}
export interface RefItem {
  ref?: string;
  identifier?: { system?: string; value?: string };
}
export interface QtyItem {
  value: Dec;
  system?: string;
  code?: string;
  unit?: string;
}

export interface Extracted {
  string?: string[];
  token?: TokenItem[];
  date?: Range[];
  /** The raw date strings behind `date` (to draw query values from). */
  dateRaw?: string[];
  reference?: RefItem[];
  quantity?: QtyItem[];
  number?: Dec[];
  uri?: string[];
}

export class Unsupported extends Error {}

const PRIMITIVE_STRING = new Set(['FHIR.string', 'FHIR.markdown', 'FHIR.code', 'FHIR.id', 'FHIR.uri', 'FHIR.url', 'FHIR.canonical', 'FHIR.oid', 'FHIR.uuid', 'System.String']);
const QUANTITY_TYPES = new Set(['FHIR.Quantity', 'FHIR.Age', 'FHIR.Duration', 'FHIR.Distance', 'FHIR.Count', 'FHIR.SimpleQuantity', 'FHIR.MoneyQuantity']);

const asList = (v: unknown): any[] => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);

function stringParts(t: string, v: any, out: string[]) {
  if (PRIMITIVE_STRING.has(t)) {
    if (typeof v === 'string') out.push(v);
  } else if (t === 'FHIR.HumanName') {
    for (const k of ['family', 'given', 'prefix', 'suffix', 'text']) out.push(...asList(v[k]));
  } else if (t === 'FHIR.Address') {
    for (const k of ['line', 'city', 'district', 'state', 'postalCode', 'country', 'text']) out.push(...asList(v[k]));
  } else if (t === 'FHIR.Extension') {
    const k = Object.keys(v).find((x) => x.startsWith('value'));
    if (k && typeof v[k] === 'string') out.push(v[k]);
    else if (k) throw new Unsupported(`string search on an extension holding ${k}`);
  } else throw new Unsupported(`string search on ${t}`);
}

function tokenParts(t: string, v: any, out: TokenItem[]) {
  const coding = (c: Obj) => out.push({ kind: 'coding', system: c.system, code: c.code, text: c.display });
  if (t === 'FHIR.Coding') coding(v);
  else if (t === 'FHIR.CodeableConcept') {
    for (const c of asList(v.coding)) coding(c);
    if (typeof v.text === 'string') out.push({ kind: 'coding', text: v.text });
  } else if (t === 'FHIR.Identifier') {
    if (v.value !== undefined || v.system !== undefined || v.type?.text !== undefined) out.push({ kind: 'identifier', system: v.system, code: v.value, text: v.type?.text });
  } else if (t === 'FHIR.ContactPoint') {
    if (typeof v.value === 'string') out.push({ kind: 'contact', code: v.value });
  } else if (PRIMITIVE_STRING.has(t)) out.push({ kind: 'primitive', code: v });
  else if (t === 'FHIR.boolean' || t === 'System.Boolean') out.push({ kind: 'primitive', code: String(v) });
  else throw new Unsupported(`token search on ${t}`);
}

function dateParts(t: string, v: any, out: Range[], raw: string[]) {
  if (t === 'FHIR.date' || t === 'FHIR.dateTime' || t === 'FHIR.instant' || t === 'System.DateTime') {
    const r = dateRange(v, t === 'FHIR.instant');
    if (!r) throw new Unsupported(`unparseable date ${v}`);
    out.push(r);
    raw.push(v);
  } else if (t === 'FHIR.Period') {
    const s = v.start ? dateRange(v.start) : undefined;
    const e = v.end ? dateRange(v.end) : undefined;
    if (!s && !e) return;
    out.push([s ? s[0] : -Infinity, e ? e[1] : Infinity]);
    if (v.start) raw.push(v.start);
    if (v.end) raw.push(v.end);
  } else if (t === 'FHIR.Timing') {
    const ranges = asList(v.event).map((x: string) => dateRange(x)!);
    const b = v.repeat?.boundsPeriod;
    if (b) ranges.push([b.start ? dateRange(b.start)![0] : -Infinity, b.end ? dateRange(b.end)![1] : Infinity]);
    if (ranges.length) out.push([Math.min(...ranges.map((r) => r[0])), Math.max(...ranges.map((r) => r[1]))]); // outer bounds only
    raw.push(...asList(v.event));
  } else throw new Unsupported(`date search on ${t}`);
}

function referenceParts(t: string, v: any, out: RefItem[]) {
  if (t === 'FHIR.Reference') {
    if (typeof v.reference === 'string' && !v.reference.startsWith('#')) out.push({ ref: v.reference });
    if (v.identifier) out.push({ identifier: v.identifier }); // for :identifier, literal reference or not
  } else if (t === 'FHIR.canonical' || t === 'FHIR.uri' || t === 'FHIR.url') out.push({ ref: v });
  else throw new Unsupported(`reference search on ${t}`);
}

function quantityParts(t: string, v: any, out: QtyItem[]) {
  if (QUANTITY_TYPES.has(t) || t === 'FHIR.Money') {
    if (typeof v.value !== 'number') return;
    out.push({ value: parseDec(String(v.value))!, system: v.system, code: v.code ?? v.currency, unit: v.unit });
  } else if (t === 'FHIR.SampledData') throw new Unsupported('quantity search on SampledData');
  else throw new Unsupported(`quantity search on ${t}`);
}

type Compiled = (r: unknown) => unknown[];
const compiledCache = new Map<string, { strict: Compiled; lenient?: Compiled }>();

/** `where(resolve() is X)` as a check of the reference's type (digest §2: never dereference). */
export function oracleExpression(expr: string): string {
  return expr.replace(/\.where\(resolve\(\) is (\w+)\)/g, (_m, t: string) => `.where(reference.matches('^(.*/)?${t}/[^/]+(/_history/[^/]+)?$'))`);
}

/** Why a parameter cannot be compared by the oracle, or undefined when it can. */
export function exclusionReason(p: OracleParam): string | undefined {
  if (!(ORACLE_TYPES as string[]).includes(p.type)) return `type ${p.type} (composite/special: no single-value comparison)`;
  if (p.code === 'phonetic') return 'phonetic matching is server-defined';
  if (!p.expression) return 'no FHIRPath expression (hand-coded on the server)';
  const rest = p.expression.replace(/\.where\(resolve\(\) is \w+\)/g, '');
  if (rest.includes('resolve()')) return 'expression dereferences with resolve()';
  try {
    compile(p);
  } catch (e) {
    return `fhirpath.js cannot compile the expression: ${(e as Error).message.split('\n')[0]}`;
  }
  return undefined;
}

/**
 * The compiled expression. fhirpath.js rejects `(X as T)` when X has several items (FHIRPath: `as`
 * needs a singleton), which the R4 definitions hit on e.g. Observation.component.value; R5
 * corrected those expressions to `X.ofType(T)`, which is evaluated when the strict form throws.
 */
function compile(p: OracleParam) {
  const key = `${p.resourceType}.${p.code}`;
  let c = compiledCache.get(key);
  if (!c) {
    const expr = oracleExpression(p.expression!);
    const opts = { resolveInternalTypes: false };
    const strict = fhirpath.compile(expr, r4Model, opts) as unknown as Compiled;
    const r5 = expr.replace(/\(([A-Za-z][\w.]*) as (\w+)\)/g, '$1.ofType($2)');
    c = { strict, lenient: r5 !== expr ? (fhirpath.compile(r5, r4Model, opts) as unknown as Compiled) : undefined };
    compiledCache.set(key, c);
  }
  return c;
}

function evaluate(p: OracleParam, resource: Obj): unknown[] {
  const c = compile(p);
  try {
    return c.strict(resource);
  } catch (e) {
    if (!c.lenient) throw e;
    return c.lenient(resource);
  }
}

/** The values of `p` in `resource`, typed per the parameter type. */
export function extract(p: OracleParam, resource: Obj): Extracted {
  if (p.code === '_id') return { token: [{ kind: 'primitive', code: resource.id }] };
  const nodes = evaluate(p, resource);
  const types = fhirpath.types(nodes) as string[];
  const values = fhirpath.resolveInternalTypes(nodes) as any[];
  const e: Extracted = {};
  values.forEach((v, i) => {
    const t = types[i];
    switch (p.type) {
      case 'string':
        stringParts(t, v, (e.string ??= []));
        break;
      case 'token':
        tokenParts(t, v, (e.token ??= []));
        break;
      case 'date':
        dateParts(t, v, (e.date ??= []), (e.dateRaw ??= []));
        break;
      case 'reference':
        referenceParts(t, v, (e.reference ??= []));
        break;
      case 'quantity':
        quantityParts(t, v, (e.quantity ??= []));
        break;
      case 'number':
        if (typeof v === 'number') (e.number ??= []).push(parseDec(String(v))!);
        else throw new Unsupported(`number search on ${t}`);
        break;
      case 'uri':
        if (typeof v === 'string') (e.uri ??= []).push(v);
        else throw new Unsupported(`uri search on ${t}`);
        break;
    }
  });
  return e;
}

function hasValue(p: OracleParam, e: Extracted): boolean {
  const list = (e as Record<string, unknown[] | undefined>)[p.type];
  return Boolean(list && list.length);
}

// ---- matching ---------------------------------------------------------------------------------

const PREFIXES = ['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap'];
function splitPrefix(v: string): [string, string] {
  const p = v.slice(0, 2);
  return PREFIXES.includes(p) && /^[a-z]{2}[-+.\d]/.test(v) ? [p, v.slice(2)] : ['eq', v];
}

/** Range comparison for dates (digest §4): S = search range, T = target range. */
function rangeMatch(prefix: string, S: Range, T: Range): boolean {
  const contains = T[0] >= S[0] && T[1] <= S[1];
  switch (prefix) {
    case 'eq':
      return contains;
    case 'ne':
      return !contains;
    case 'gt':
      return T[1] > S[1];
    case 'lt':
      return T[0] < S[0];
    case 'ge':
      return T[1] > S[1] || contains;
    case 'le':
      return T[0] < S[0] || contains;
    case 'sa':
      return T[0] >= S[1];
    case 'eb':
      return T[1] <= S[0];
  }
  throw new Unsupported(`date prefix ${prefix}`);
}

/** Number comparison: implicit precision for eq/ne, the exact value for the other prefixes. */
function numberMatch(prefix: string, q: string, v: Dec): boolean {
  const n = parseDec(q);
  if (!n) throw new Unsupported(`bad number ${q}`);
  const [lo, hi] = implicitRange(q);
  const inRange = cmpDec(v, lo) >= 0 && cmpDec(v, hi) < 0;
  switch (prefix) {
    case 'eq':
      return inRange;
    case 'ne':
      return !inRange;
    case 'gt':
    case 'sa':
      return cmpDec(v, n) > 0;
    case 'lt':
    case 'eb':
      return cmpDec(v, n) < 0;
    case 'ge':
      return cmpDec(v, n) >= 0;
    case 'le':
      return cmpDec(v, n) <= 0;
    case 'ap': {
      const d = absDec({ m: n.m, s: n.s + 1 }); // 10 %
      return cmpDec(v, addDec(n, negDec(d))) >= 0 && cmpDec(v, addDec(n, d)) <= 0;
    }
  }
  return false;
}

function tokenMatch(items: TokenItem[], raw: string): boolean {
  const parts = splitUnescaped(raw, '|');
  if (parts.length === 1) {
    const code = unescapeValue(parts[0]);
    return items.some((i) => i.code !== undefined && i.code === code);
  }
  const [system, code] = [unescapeValue(parts[0]), unescapeValue(parts.slice(1).join('|'))];
  return items.some((i) => {
    if (i.kind === 'contact') return false; // ContactPoint.system is not a code system
    if (system === '') return i.system === undefined && i.code === code;
    if (code === '') return i.system === system;
    return i.system === system && i.code === code;
  });
}

/** Our reference as `Type/id` when it is relative or on our base; undefined for other absolute URLs. */
function localRef(ref: string, baseUrl: string): { type: string; id: string } | undefined {
  let r = ref;
  if (r.startsWith(baseUrl + '/')) r = r.slice(baseUrl.length + 1);
  const x = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(r);
  return x ? { type: x[1], id: x[2] } : undefined;
}

function referenceMatch(p: OracleParam, items: RefItem[], raw: string, modifier: string | undefined, baseUrl: string): boolean {
  const v = unescapeValue(raw);
  if (modifier === 'identifier') {
    const parts = splitUnescaped(raw, '|').map(unescapeValue);
    return items.some((i) => {
      if (!i.identifier) return false;
      if (parts.length === 1) return i.identifier.value === parts[0];
      if (parts[0] === '') return i.identifier.system === undefined && i.identifier.value === parts[1];
      return i.identifier.system === parts[0] && (parts[1] === '' || i.identifier.value === parts[1]);
    });
  }
  const want = localRef(v, baseUrl);
  const bareId = /^[A-Za-z0-9\-.]{1,64}$/.test(v) ? v : undefined;
  return items.some((i) => {
    if (!i.ref) return false;
    const have = localRef(i.ref, baseUrl);
    if (modifier) return Boolean(have && have.type === modifier && (have.id === v || (want && want.type === modifier && want.id === have.id)));
    if (want) return Boolean(have && have.type === want.type && have.id === want.id);
    if (bareId) return Boolean(have && have.id === bareId && (!p.target?.length || p.target.includes(have.type)));
    return i.ref === v;
  });
}

function quantityMatch(items: QtyItem[], raw: string): boolean {
  const parts = splitUnescaped(raw, '|').map(unescapeValue);
  const [prefix, num] = splitPrefix(parts[0]);
  const system = parts[1] ?? '';
  const code = parts[2] ?? '';
  return items.some((q) => {
    if (!numberMatch(prefix, num, q.value)) return false;
    if (system && q.system !== system) return false;
    if (code && (system ? q.code !== code : q.code !== code && q.unit !== code)) return false;
    return true;
  });
}

/** Whether `resource` matches `name[:modifier]=value` (one parameter, commas = OR). */
export function matches(p: OracleParam, modifier: string | undefined, value: string, e: Extracted, baseUrl: string): boolean {
  if (modifier === 'missing') return (value === 'true') !== hasValue(p, e);
  const alternatives = splitUnescaped(value, ',');
  if (p.type === 'token' && modifier === 'not') return !alternatives.some((a) => tokenMatch(e.token ?? [], a));
  return alternatives.some((raw) => {
    switch (p.type) {
      case 'string': {
        const q = unescapeValue(raw);
        const list = e.string ?? [];
        if (modifier === 'exact') return list.some((s) => s === q);
        const f = foldString(q);
        if (!f) return false;
        if (modifier === 'contains') return list.some((s) => foldString(s).includes(f));
        if (modifier) throw new Unsupported(`string modifier ${modifier}`);
        return list.some((s) => foldString(s).startsWith(f));
      }
      case 'token': {
        if (modifier === 'text') {
          const f = foldString(unescapeValue(raw));
          return Boolean(f) && (e.token ?? []).some((i) => i.text !== undefined && foldString(i.text).startsWith(f));
        }
        if (modifier) throw new Unsupported(`token modifier ${modifier}`);
        return tokenMatch(e.token ?? [], raw);
      }
      case 'date': {
        if (modifier) throw new Unsupported(`date modifier ${modifier}`);
        const [prefix, d] = splitPrefix(unescapeValue(raw));
        const S = dateRange(d);
        if (!S) throw new Unsupported(`bad date ${d}`);
        return (e.date ?? []).some((T) => rangeMatch(prefix, S, T));
      }
      case 'number': {
        const [prefix, n] = splitPrefix(unescapeValue(raw));
        return (e.number ?? []).some((v) => numberMatch(prefix, n, v));
      }
      case 'quantity':
        return quantityMatch(e.quantity ?? [], raw);
      case 'reference':
        return referenceMatch(p, e.reference ?? [], raw, modifier, baseUrl);
      case 'uri': {
        const q = unescapeValue(raw);
        const list = e.uri ?? [];
        if (modifier === 'below') return list.some((u) => u.startsWith(q));
        if (modifier === 'above') return list.some((u) => q.startsWith(u));
        if (modifier) throw new Unsupported(`uri modifier ${modifier}`);
        return list.some((u) => u === q);
      }
    }
    return false;
  });
}
