/**
 * Generates profiles/r4-registry.json from the official HL7 FHIR R4 package
 * (npm `hl7.fhir.r4.examples@4.0.1`).
 *
 *   npx tsx profiles/build-registry.ts
 *
 * Output shape (see profiles/README.md):
 *   { fhirVersion, types: { <Type>: { summary, elements, searchParams } } }
 *
 * The output is deterministic (types and search parameters are sorted, elements keep
 * snapshot order) and formatted with one element / search parameter per line so that
 * diffs stay readable.
 */
import * as fs from 'fs';
import * as path from 'path';

// ---------------------------------------------------------------------------------------------
// Output types (also used by validator.ts via the JSON file)
// ---------------------------------------------------------------------------------------------

export interface RegistryElement {
  path: string;
  min: number;
  max: string;
  /** FHIR type codes; absent for elements defined by contentReference */
  types?: string[];
  /** e.g. "#Questionnaire.item" for recursive elements (these have no types of their own) */
  contentReference?: string;
}

export interface RegistrySearchParamComponent {
  definition: string;
  expression: string;
}

export interface RegistrySearchParam {
  code: string;
  type: string;
  expression?: string;
  url: string;
  target?: string[];
  modifier?: string[];
  comparator?: string[];
  component?: RegistrySearchParamComponent[];
}

export interface RegistryType {
  summary: string[];
  elements: RegistryElement[];
  searchParams: RegistrySearchParam[];
}

export interface Registry {
  fhirVersion: string;
  /** CompartmentDefinition-patient: for each resource type, the search parameters that put a
   * resource into a patient's compartment (types without an entry are outside it). */
  compartments: { Patient: Record<string, string[]> };
  types: Record<string, RegistryType>;
}

// ---------------------------------------------------------------------------------------------
// Minimal shapes of the FHIR conformance resources we read
// ---------------------------------------------------------------------------------------------

interface SdType {
  code: string;
  extension?: { url: string; valueUrl?: string }[];
}
interface SdElement {
  path: string;
  min?: number;
  max?: string;
  type?: SdType[];
  isSummary?: boolean;
  contentReference?: string;
}
interface StructureDefinition {
  resourceType: string;
  type: string;
  kind: string;
  derivation?: string;
  abstract: boolean;
  baseDefinition?: string;
  fhirVersion?: string;
  snapshot?: { element: SdElement[] };
}
interface SearchParameter {
  resourceType: string;
  url: string;
  code: string;
  base?: string[];
  type: string;
  expression?: string;
  experimental?: boolean;
  target?: string[];
  modifier?: string[];
  comparator?: string[];
  component?: { definition: string; expression: string }[];
}

const FHIR_TYPE_EXT = 'http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type';

function readJson<T>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

/** Type code of an ElementDefinition.type; System.* codes (e.g. Resource.id) use the fhir-type extension. */
function typeCode(t: SdType): string {
  if (t.code.startsWith('http://hl7.org/fhirpath/System.')) {
    const ext = t.extension?.find((e) => e.url === FHIR_TYPE_EXT);
    if (ext?.valueUrl) return ext.valueUrl;
    return t.code.slice('http://hl7.org/fhirpath/System.'.length).toLowerCase();
  }
  return t.code;
}

/**
 * Split a FHIRPath expression on top-level `|` (not inside parentheses/brackets/braces,
 * string literals or backtick-delimited identifiers).
 */
export function splitUnion(expr: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quote: string | null = null;
  let start = 0;
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = null;
      continue;
    }
    if (c === "'" || c === '"' || c === '`') quote = c;
    else if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') depth--;
    else if (c === '|' && depth === 0) {
      parts.push(expr.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expr.slice(start).trim());
  return parts.filter((p) => p.length > 0);
}

/** Keep only the union parts of `expr` that apply to resource type `type`. */
export function reduceExpression(expr: string, type: string, resourceTypes: ReadonlySet<string>): string {
  const kept = splitUnion(expr).filter((part) => {
    const m = /^[\s(]*([A-Za-z][A-Za-z0-9_]*)/.exec(part);
    if (!m) return true;
    const lead = m[1];
    if (lead === type || lead === 'Resource' || lead === 'DomainResource') return true;
    return !resourceTypes.has(lead);
  });
  return kept.join(' | ');
}

function main(): void {
  const pkgDir = path.dirname(require.resolve('hl7.fhir.r4.examples/package.json'));
  const pkg = readJson<{ fhirVersions?: string[] }>(path.join(pkgDir, 'package.json'));
  const files = fs.readdirSync(pkgDir).sort();

  // --- resource StructureDefinitions -------------------------------------------------------
  const sds: StructureDefinition[] = [];
  for (const f of files) {
    if (!f.startsWith('StructureDefinition-') || !f.endsWith('.json')) continue;
    const sd = readJson<StructureDefinition>(path.join(pkgDir, f));
    if (sd.resourceType !== 'StructureDefinition') continue;
    if (sd.kind === 'resource' && sd.derivation === 'specialization' && sd.abstract === false) sds.push(sd);
  }
  sds.sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
  const resourceTypes = new Set(sds.map((s) => s.type));
  const typeNamesForLead = new Set<string>([...resourceTypes, 'Resource', 'DomainResource']);

  // --- SearchParameters --------------------------------------------------------------------
  const sps: SearchParameter[] = [];
  for (const f of files) {
    if (!f.startsWith('SearchParameter-') || !f.endsWith('.json')) continue;
    const sp = readJson<SearchParameter>(path.join(pkgDir, f));
    if (sp.resourceType !== 'SearchParameter' || !Array.isArray(sp.base)) continue;
    sps.push(sp);
  }

  const fhirVersion = pkg.fhirVersions?.[0] ?? sds[0]?.fhirVersion ?? '4.0.1';
  const registry: Registry = { fhirVersion, compartments: { Patient: {} }, types: {} };

  // --- the Patient compartment (who may see what under patient/ scopes) ----------------------
  const compartment = readJson<{ resource?: Array<{ code: string; param?: string[] }> }>(
    path.join(pkgDir, 'CompartmentDefinition-patient.json'),
  );
  for (const r of compartment.resource ?? []) {
    if (r.param?.length) registry.compartments.Patient[r.code] = [...r.param];
  }

  for (const sd of sds) {
    const type = sd.type;
    const snapshot = sd.snapshot?.element ?? [];
    const isDomainResource = sd.baseDefinition === 'http://hl7.org/fhir/StructureDefinition/DomainResource';

    // elements + summary
    const elements: RegistryElement[] = [];
    const summary: string[] = [];
    for (const e of snapshot) {
      if (e.path === type) continue; // root
      const el: RegistryElement = { path: e.path, min: e.min ?? 0, max: e.max ?? '*' };
      const types = (e.type ?? []).map(typeCode);
      if (types.length) el.types = types;
      if (e.contentReference) el.contentReference = e.contentReference;
      elements.push(el);

      const rest = e.path.slice(type.length + 1);
      if (!rest.includes('.')) {
        if (e.isSummary === true || rest === 'id' || rest === 'meta' || (e.min ?? 0) >= 1) {
          if (!summary.includes(rest)) summary.push(rest);
        }
      }
    }

    // search parameters
    const byCode = new Map<string, { sp: RegistrySearchParam; experimental: boolean }>();
    for (const sp of sps) {
      const base = sp.base ?? [];
      const resourceLevel =
        base.includes('Resource') || (isDomainResource && base.includes('DomainResource'));
      if (!base.includes(type) && !resourceLevel) continue;

      let expression: string | undefined;
      if (sp.expression) {
        expression = reduceExpression(sp.expression, type, typeNamesForLead);
        if (!expression) continue; // no union part applies to this type
      } else if (!resourceLevel) {
        continue; // non-resource-level parameters without an expression are unusable
      }

      // key order: code, type, expression, url, target, modifier, comparator, component
      const out = { code: sp.code, type: sp.type } as RegistrySearchParam;
      if (expression) out.expression = expression;
      out.url = sp.url;
      if (sp.target?.length) out.target = [...sp.target];
      if (sp.modifier?.length) out.modifier = [...sp.modifier];
      if (sp.comparator?.length) out.comparator = [...sp.comparator];
      if (sp.component?.length)
        out.component = sp.component.map((c) => ({ definition: c.definition, expression: c.expression }));

      // Duplicate codes come from the package's *example* SearchParameters (e.g. SearchParameter-example
      // redefines _id, SearchParameter-example-reference redefines Condition.subject). Prefer the
      // non-experimental (core) definition; tie-break on url for determinism.
      const experimental = sp.experimental === true;
      const prev = byCode.get(sp.code);
      if (
        !prev ||
        (prev.experimental && !experimental) ||
        (prev.experimental === experimental && out.url < prev.sp.url)
      ) {
        byCode.set(sp.code, { sp: out, experimental });
      }
    }
    const searchParams = [...byCode.values()]
      .map((v) => v.sp)
      .sort((a, b) => (a.code < b.code ? -1 : a.code > b.code ? 1 : 0));

    registry.types[type] = { summary, elements, searchParams };
  }

  const outFile = path.join(__dirname, 'r4-registry.json');
  const text = serialize(registry);
  fs.writeFileSync(outFile, text);
  const nTypes = Object.keys(registry.types).length;
  let nEl = 0;
  let nSp = 0;
  for (const t of Object.values(registry.types)) {
    nEl += t.elements.length;
    nSp += t.searchParams.length;
  }
  console.log(
    `wrote ${path.relative(process.cwd(), outFile)}: ${nTypes} types, ${nEl} elements, ${nSp} search params, ` +
      `${(Buffer.byteLength(text) / 1024).toFixed(0)} KiB`,
  );
}

/** Compact but diff-friendly: one element / search parameter per line. */
function serialize(reg: Registry): string {
  const j = JSON.stringify;
  const lines: string[] = ['{', `  "fhirVersion": ${j(reg.fhirVersion)},`, '  "compartments": {', '    "Patient": {'];
  const members = Object.keys(reg.compartments.Patient).sort();
  members.forEach((t, i) => lines.push(`      ${j(t)}: ${j(reg.compartments.Patient[t])}${i < members.length - 1 ? ',' : ''}`));
  lines.push('    }', '  },', '  "types": {');
  const names = Object.keys(reg.types);
  names.forEach((name, ti) => {
    const t = reg.types[name];
    lines.push(`    ${j(name)}: {`);
    lines.push(`      "summary": ${j(t.summary)},`);
    lines.push('      "elements": [');
    t.elements.forEach((e, i) => lines.push(`        ${j(e)}${i < t.elements.length - 1 ? ',' : ''}`));
    lines.push('      ],');
    lines.push('      "searchParams": [');
    t.searchParams.forEach((p, i) => lines.push(`        ${j(p)}${i < t.searchParams.length - 1 ? ',' : ''}`));
    lines.push('      ]');
    lines.push(`    }${ti < names.length - 1 ? ',' : ''}`);
  });
  lines.push('  }', '}', '');
  return lines.join('\n');
}

if (require.main === module) {
  const t0 = process.hrtime.bigint();
  main();
  console.log(`done in ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(0)} ms`);
}
