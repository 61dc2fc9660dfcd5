/**
 * Whether a search parameter has at most one value (one index row) per resource, from the
 * element cardinalities of the R4 StructureDefinitions (profiles/r4-registry.json). Used to merge
 * `date=ge..&date=lt..` into one condition on the same index row: for a parameter with several
 * values per resource the two clauses may be met by different values, so they stay separate.
 */
import r4 from '../../profiles/r4-registry.json';
import type { SearchParamDef } from '../../resources';

type RawElement = { path: string; max: string; types?: string[] };
const elements = new Map<string, RawElement>();
for (const t of Object.values((r4 as unknown as { types: Record<string, { elements?: RawElement[] }> }).types)) {
  for (const e of t.elements ?? []) elements.set(e.path.replace(/\[x\]$/, ''), e);
}

/** Types whose one element still yields several date rows (Timing: one per event). */
const MULTI_ROW_TYPES = new Set(['Timing']);
const cache = new Map<string, boolean>();

export function singleValued(def: SearchParamDef): boolean {
  const expr = (def.expression ?? '').trim();
  let hit = cache.get(expr);
  if (hit !== undefined) return hit;
  hit = false;
  // `Type.a.b` or `(Type.a as T)`: a plain path, one branch (a union can yield several values)
  const m = /^(?:\(([A-Z][A-Za-z]+(?:\.[a-z][A-Za-z]*)+) as ([a-zA-Z]+)\)|([A-Z][A-Za-z]+(?:\.[a-z][A-Za-z]*)+))$/.exec(expr);
  if (m) {
    const segments = (m[1] ?? m[3]).split('.');
    let ok = true;
    let last: RawElement | undefined;
    for (let i = 2; i <= segments.length && ok; i++) {
      last = elements.get(segments.slice(0, i).join('.'));
      ok = last !== undefined && last.max === '1';
    }
    const types = m[2] ? [m[2]] : (last?.types ?? []);
    hit = ok && types.length > 0 && !types.some((t) => MULTI_ROW_TYPES.has(t));
  }
  cache.set(expr, hit);
  return hit;
}
