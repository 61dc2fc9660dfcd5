/** Parsing of search query strings into parameter clauses (name, modifier, OR-values). */
import { badRequest } from '../fhir/errors';

export interface Clause {
  name: string;
  modifier?: string;
  /** OR-ed values (comma-separated in the query, `\,` escapes a comma), unescaped. */
  values: string[];
  /**
   * The same values with the escapes `\|`, `\$`, `\\` kept, for values that are split further on
   * `|` (token, quantity, :identifier; use splitPipe) or `$` (composite).
   */
  rawValues: string[];
  /** The original `name[:modifier]` as given, for self links. */
  raw: string;
}

export type QueryInput = Array<[string, string]>;

/** Turns express' parsed query (or a form body) into ordered [key, value] pairs. */
export function queryPairs(...sources: Array<Record<string, unknown> | undefined>): QueryInput {
  const out: QueryInput = [];
  for (const src of sources) {
    if (!src) continue;
    for (const [k, v] of Object.entries(src)) {
      const list = Array.isArray(v) ? v : [v];
      for (const x of list) {
        if (typeof x === 'string') out.push([k, x]);
        else if (x !== undefined) throw badRequest(`Search parameter "${k}" has an unsupported structure`);
      }
    }
  }
  return out;
}

const ESCAPABLE = '\\|$,';

/**
 * Splits on an unescaped separator. `\<sep>` is always the literal separator; the other escapes
 * (`\,` `\$` `\|` `\\`) become their character when `unescape` is set, and are kept for a later
 * split otherwise.
 */
function splitOn(value: string, sep: string, unescape: boolean): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && i + 1 < value.length && ESCAPABLE.includes(value[i + 1])) {
      const n = value[++i];
      cur += n === sep || unescape ? n : c + n;
    } else if (c === sep) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** Splits on unescaped commas; `\,` becomes `,`, the other escapes stay for later splitting. */
export const splitOrRaw = (value: string): string[] => splitOn(value, ',', false);

/** Splits a raw value on unescaped `$` (composite components), keeping the other escapes. */
export const splitDollarRaw = (value: string): string[] => splitOn(value, '$', false);

/** Splits a raw value (see Clause.rawValues) on unescaped `|`, unescaping the parts. */
export const splitPipe = (value: string): string[] => splitOn(value, '|', true);

/** A value's escapes (`\,` `\$` `\|` `\\`) as the literal characters. */
export function unescapeValue(value: string): string {
  return value.replace(/\\([\\|$,])/g, '$1');
}

export function splitOr(value: string): string[] {
  return splitOrRaw(value).map(unescapeValue);
}

export function parseClause(key: string, value: string): Clause {
  const idx = key.indexOf(':');
  const name = idx < 0 ? key : key.slice(0, idx);
  const modifier = idx < 0 ? undefined : key.slice(idx + 1);
  const rawValues = splitOrRaw(value);
  return { name, modifier, values: rawValues.map(unescapeValue), rawValues, raw: key };
}

export const PREFIXES = ['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap'] as const;
export type Prefix = (typeof PREFIXES)[number];

export function splitPrefix(value: string): { prefix: Prefix; rest: string } {
  const m = /^([a-z]{2})(.*)$/.exec(value);
  if (m && (PREFIXES as readonly string[]).includes(m[1])) return { prefix: m[1] as Prefix, rest: m[2] };
  return { prefix: 'eq', rest: value };
}
