/**
 * Composite search parameters: their components are other SearchParameters, named by canonical
 * URL (`definition`) and evaluated with an `expression` relative to each item of the composite's
 * own expression. Shared by the indexer (extraction into idx_composite) and the query builder.
 */
import { registry, SearchParamDef, SearchParamType } from '../../resources';

export interface CompositeComponent {
  /** The component's own SearchParameter (its type decides value syntax and matching). */
  def: SearchParamDef;
  /** FHIRPath relative to one item of the composite's expression. */
  expression: string;
}

/** Component types we can index and match (R4 composites use token, quantity, number, date, string, reference). */
export const COMPONENT_TYPES = new Set<SearchParamType>(['token', 'quantity', 'number', 'date', 'string', 'reference', 'uri']);

/** Slots in idx_composite (c1..c3): R4 composites have two or three components. */
export const MAX_COMPONENTS = 3;

/**
 * Known errors in the R4 definitions. DocumentReference `relationship` (relatesto$relation)
 * gives the reference component the expression `code` and the token component `target`.
 */
const ERRATA: Record<string, Record<string, string>> = {
  'http://hl7.org/fhir/SearchParameter/DocumentReference-relationship': {
    'http://hl7.org/fhir/SearchParameter/DocumentReference-relatesto': 'target',
    'http://hl7.org/fhir/SearchParameter/DocumentReference-relation': 'code',
  },
};

let byUrl: Map<string, SearchParamDef> | undefined;

/** The SearchParameter with this canonical URL, from any resource type in the registry. */
export function searchParamByUrl(url: string): SearchParamDef | undefined {
  if (!byUrl) {
    byUrl = new Map();
    for (const t of registry.values()) for (const p of t.searchParams.values()) if (p.url && !byUrl.has(p.url)) byUrl.set(p.url, p);
  }
  return byUrl.get(url);
}

const resolved = new Map<string, CompositeComponent[] | null>();

/** The components of a composite parameter, or undefined when one cannot be indexed. */
export function compositeComponents(def: SearchParamDef): CompositeComponent[] | undefined {
  if (def.type !== 'composite' || !def.expression || !def.component?.length) return undefined;
  const key = def.url || def.code;
  let list = resolved.get(key);
  if (list === undefined) {
    list = null;
    if (def.component.length <= MAX_COMPONENTS) {
      const errata = ERRATA[def.url] ?? {};
      const comps: CompositeComponent[] = [];
      for (const c of def.component) {
        const p = searchParamByUrl(c.definition);
        if (!p || !COMPONENT_TYPES.has(p.type)) break;
        // FHIRPath's System.DateTime is FHIR's dateTime for `as()` on FHIR data.
        const expression = (errata[c.definition] ?? c.expression).replace(/\bas\(DateTime\)/g, 'as(dateTime)');
        comps.push({ def: p, expression });
      }
      if (comps.length === def.component.length) list = comps;
    }
    resolved.set(key, list);
  }
  return list ?? undefined;
}
