/**
 * Value sets for token `:in` / `:not-in`. The server has no terminology service: a value set is
 * a ValueSet resource stored in the same tenant (found by its canonical `url`, `url|version`, or
 * `ValueSet/[id]`), and its codes are its `expansion.contains` (recursively) or, without an
 * expansion, the concepts its `compose.include` lists (minus `compose.exclude`). An include of a
 * whole code system (a system without concepts) means every code of that system.
 *
 * Conditions are built synchronously, so value sets are resolved in a pre-pass: building the
 * conditions once records the value sets they need (see `lookup`), `load` reads them, and the
 * conditions are built again (search.ts `resolveConditions`).
 */
import type { ValueSet, ValueSetComposeInclude, ValueSetExpansionContains } from 'fhir/r4';
import type { Tx } from '../db/tenant-tx';
import { FhirError } from '../fhir/errors';

/** Codes of a value set: a coding matches when (system, code) is in `pairs`, or its system is
 * in `systems` and (system, code) is not in `exceptPairs`. */
export interface CodeSet {
  pairs: Array<[string, string]>;
  systems: string[];
  exceptPairs: Array<[string, string]>;
}

export class ValueSetResolver {
  private sets = new Map<string, CodeSet>();
  /** Value sets asked for but not loaded yet, with the parameter that asked (for messages). */
  private wanted = new Map<string, string>();

  /** The codes of a loaded value set; otherwise records it for `load` and returns undefined. */
  lookup(ref: string, key: string): CodeSet | undefined {
    const set = this.sets.get(ref);
    if (!set && !this.wanted.has(ref)) this.wanted.set(ref, key);
    return set;
  }

  get pending(): boolean {
    return this.wanted.size > 0;
  }

  async load(tx: Tx, baseUrl: string): Promise<void> {
    for (const [ref, key] of this.wanted) {
      const vs = await readValueSet(tx, ref, baseUrl);
      if (!vs) {
        throw FhirError.of(
          400,
          'not-found',
          `Value set "${ref}" (in "${key}") is not known: store it as a ValueSet resource in this tenant (found by its url, or refer to it as ValueSet/[id])`,
          [key],
        );
      }
      this.sets.set(ref, codeSetOf(vs, ref, key));
    }
    this.wanted.clear();
  }
}

async function readValueSet(tx: Tx, ref: string, baseUrl: string): Promise<ValueSet | undefined> {
  const local = ref.startsWith(baseUrl + '/') ? ref.slice(baseUrl.length + 1) : ref;
  const byId = /^ValueSet\/([A-Za-z0-9\-.]{1,64})$/.exec(local);
  if (byId) {
    const r = await tx.raw(
      `SELECT content::text AS json FROM resources WHERE tenant_id = ? AND res_type = 'ValueSet' AND id = ? AND deleted = false`,
      [tx.tenant, byId[1]],
    );
    return r.rows[0] ? JSON.parse(r.rows[0].json) : undefined;
  }
  const bar = ref.lastIndexOf('|');
  const url = bar < 0 ? ref : ref.slice(0, bar);
  const version = bar < 0 ? undefined : ref.slice(bar + 1);
  const r = await tx.raw(
    `SELECT r.content::text AS json FROM resources r
      WHERE r.tenant_id = ? AND r.res_type = 'ValueSet' AND r.deleted = false
        AND EXISTS (SELECT 1 FROM idx_uri u WHERE u.tenant_id = r.tenant_id AND u.res_type = r.res_type
                      AND u.res_id = r.id AND u.param = 'url' AND u.value = ?)
      ORDER BY r.last_updated DESC`,
    [tx.tenant, url],
  );
  const all = (r.rows as Array<{ json: string }>).map((row) => JSON.parse(row.json) as ValueSet);
  return version ? all.find((vs) => vs.version === version) : all[0];
}

function needsTerminology(ref: string, key: string, why: string): FhirError {
  return FhirError.of(
    400,
    'not-supported',
    `Value set "${ref}" (in "${key}") ${why}, which needs a terminology service this server does not have; ` +
      `:in and :not-in work with value sets that carry an expansion or list their concepts in compose.include`,
    [key],
  );
}

function codeSetOf(vs: ValueSet, ref: string, key: string): CodeSet {
  const contains = vs.expansion?.contains;
  if (contains) {
    const pairs: Array<[string, string]> = [];
    const walk = (list: ValueSetExpansionContains[]) => {
      for (const c of list) {
        // abstract entries are there for navigation only; they are not codes one can use
        if (c.system && c.code && !c.abstract) pairs.push([c.system, c.code]);
        if (c.contains) walk(c.contains);
      }
    };
    walk(contains);
    return { pairs, systems: [], exceptPairs: [] };
  }
  if (!vs.compose?.include?.length) throw needsTerminology(ref, key, 'has neither an expansion nor compose.include');
  const collect = (list: ValueSetComposeInclude[], what: string) => {
    const pairs: Array<[string, string]> = [];
    const systems: string[] = [];
    for (const inc of list) {
      if (inc.valueSet?.length) throw needsTerminology(ref, key, `${what}s other value sets (${inc.valueSet.join(', ')})`);
      if (inc.filter?.length) throw needsTerminology(ref, key, `${what}s codes by filter`);
      if (!inc.system) throw FhirError.of(400, 'invalid', `Value set "${ref}" (in "${key}") has a compose.${what} without a system`, [key]);
      if (inc.concept?.length) for (const c of inc.concept) pairs.push([inc.system, c.code]);
      else systems.push(inc.system);
    }
    return { pairs, systems };
  };
  const inc = collect(vs.compose.include, 'include');
  const exc = collect(vs.compose.exclude ?? [], 'exclude');
  const excluded = new Set(exc.pairs.map(([s, c]) => `${s}|${c}`));
  const excludedSystems = new Set(exc.systems);
  const systems = inc.systems.filter((s) => !excludedSystems.has(s));
  return {
    pairs: inc.pairs.filter(([s, c]) => !excluded.has(`${s}|${c}`) && !excludedSystems.has(s)),
    systems,
    exceptPairs: exc.pairs.filter(([s]) => systems.includes(s)),
  };
}
