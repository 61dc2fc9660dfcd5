/**
 * Direct evaluation of the simplest SearchParameter expressions (`Patient.name.family`,
 * `(Observation.value as Quantity)`), which are most of them, without the FHIRPath engine: a walk
 * over the JSON guided by the type's element definitions. Anything it is not sure about (a step
 * into a datatype with choice elements, functions, filters) returns undefined, and the caller
 * compiles the expression with fhirpath.js instead. test/path-extract.test.ts checks it against
 * fhirpath.js on every official example and the Synthea fixtures.
 */
import r4 from '../../profiles/r4-registry.json';

type Json = Record<string, unknown>;
export type PathFn = (resource: unknown) => unknown[];

interface ElementInfo {
  types: string[];
  choice: boolean;
}

const elementsByType = new Map<string, Map<string, ElementInfo>>();

function elementsOf(type: string): Map<string, ElementInfo> | undefined {
  let m = elementsByType.get(type);
  if (m) return m;
  const def = (r4 as unknown as { types: Record<string, { elements: Array<{ path: string; types?: string[] }> }> }).types[type];
  if (!def) return undefined;
  m = new Map();
  for (const e of def.elements) {
    const choice = e.path.endsWith('[x]');
    m.set(choice ? e.path.slice(0, -3) : e.path, { types: e.types ?? [], choice });
  }
  elementsByType.set(type, m);
  return m;
}

/** Datatypes whose own elements are plain (no choice elements): one step into them is safe. */
const PLAIN_DATATYPES = new Set([
  'HumanName', 'Address', 'ContactPoint', 'Identifier', 'CodeableConcept', 'Coding', 'Reference', 'Period',
  'Quantity', 'Money', 'Range', 'Attachment', 'Meta', 'Ratio', 'Duration', 'Age', 'Count', 'Distance',
  'SimpleQuantity', 'MoneyQuantity', 'Narrative', 'ContactDetail', 'Signature',
]);

const upperFirst = (s: string) => s[0].toUpperCase() + s.slice(1);

interface Step {
  key: string;
  /** For a choice element: the JSON key prefix (any type), or with `as` one exact key. */
  choice?: boolean;
}

function planSteps(expr: string): Step[] | undefined {
  let path = expr.trim();
  let asType: string | undefined;
  const asMatch = /^\(?([A-Z][A-Za-z]+(?:\.[a-z][A-Za-z0-9]*)+) as ([A-Za-z]+)\)?$/.exec(path) ?? /^([A-Z][A-Za-z]+(?:\.[a-z][A-Za-z0-9]*)+)\.as\(([A-Za-z]+)\)$/.exec(path);
  if (asMatch) {
    path = asMatch[1];
    asType = asMatch[2];
  }
  if (!/^[A-Z][A-Za-z]+(\.[a-z][A-Za-z0-9]*)+$/.test(path)) return undefined;
  const [type, ...segs] = path.split('.');
  const elements = elementsOf(type);
  if (!elements) return undefined;
  const steps: Step[] = [];
  let elementPath = type;
  let inDatatype: string | undefined;
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i];
    if (inDatatype) {
      // one plain step into a plain datatype, and it must be the last step
      if (!PLAIN_DATATYPES.has(inDatatype) || i !== segs.length - 1 || asType) return undefined;
      steps.push({ key: seg });
      continue;
    }
    elementPath += '.' + seg;
    const info = elements.get(elementPath);
    if (!info) return undefined;
    const last = i === segs.length - 1;
    if (info.choice) {
      if (!last) return undefined;
      if (asType) steps.push({ key: seg + upperFirst(asType) });
      else steps.push({ key: seg, choice: true });
      return steps;
    }
    if (asType && last) return undefined; // `as` on a non-choice element: leave it to FHIRPath
    steps.push({ key: seg });
    const t = info.types;
    if (!last && !(t.length === 1 && (t[0] === 'BackboneElement' || t[0] === 'Element'))) {
      if (t.length !== 1 || t[0] === 'Resource' || t[0] === 'Extension') return undefined;
      inDatatype = t[0];
    }
  }
  return steps;
}

function push(out: unknown[], v: unknown): void {
  if (v === undefined || v === null) return;
  if (Array.isArray(v)) {
    for (const x of v) if (x !== undefined && x !== null) out.push(x);
  } else out.push(v);
}

/** Elements every resource has (`Resource.meta.tag`): Meta is a plain datatype. */
const RESOURCE_META = /^Resource\.meta\.(versionId|lastUpdated|source|profile|security|tag)$/;

/** Walks plain keys from a list of nodes, flattening arrays (as FHIRPath does). */
function walk(nodes: unknown[], keys: string[]): unknown[] {
  for (const key of keys) {
    const next: unknown[] = [];
    for (const n of nodes) if (typeof n === 'object' && n !== null) push(next, (n as Json)[key]);
    nodes = next;
    if (!nodes.length) break;
  }
  return nodes;
}

/** `Type.extension('url')` and `Type.a.extension('url')` (plain path to the element with the extension). */
function compileExtension(expr: string): PathFn | undefined {
  const m = /^([A-Z][A-Za-z]+(?:\.[a-z][A-Za-z0-9]*)*)\.extension\('([^'\\]+)'\)$/.exec(expr.trim());
  if (!m) return undefined;
  const [path, url] = [m[1], m[2]];
  const owner = path.includes('.') ? compilePath(path) : (r: unknown) => ((r as Json)?.resourceType === path ? [r] : []);
  if (!owner) return undefined;
  return (resource: unknown) => walk(owner(resource), ['extension']).filter((e) => (e as Json)?.url === url);
}

/** A direct evaluator for `expr`, or undefined when the expression needs the FHIRPath engine. */
export function compilePath(expr: string): PathFn | undefined {
  const meta = RESOURCE_META.exec(expr.trim());
  if (meta) return (resource: unknown) => (typeof (resource as Json)?.resourceType === 'string' ? walk([resource], ['meta', meta[1]]) : []);
  if (expr.includes('.extension(')) return compileExtension(expr);
  // `(Type.x as T).y`: the typed choice, then one plain step into T
  const asThen = /^\(([A-Z][A-Za-z]+(?:\.[a-z][A-Za-z0-9]*)+) as ([A-Za-z]+)\)\.([a-z][A-Za-z0-9]*)$/.exec(expr.trim());
  if (asThen) {
    if (!PLAIN_DATATYPES.has(asThen[2])) return undefined;
    const inner = compilePath(`(${asThen[1]} as ${asThen[2]})`);
    if (!inner) return undefined;
    return (resource: unknown) => walk(inner(resource), [asThen[3]]);
  }
  const steps = planSteps(expr);
  if (!steps) return undefined;
  const type = expr.replace(/^\(/, '').split('.')[0];
  return (resource: unknown) => {
    if ((resource as Json)?.resourceType !== type) return [];
    let nodes: unknown[] = [resource];
    for (const step of steps) {
      const next: unknown[] = [];
      for (const n of nodes) {
        if (typeof n !== 'object' || n === null) continue;
        const o = n as Json;
        if (step.choice) {
          for (const k in o) {
            if (k.length > step.key.length && k.startsWith(step.key) && k.charCodeAt(step.key.length) <= 90 && k.charCodeAt(step.key.length) >= 65) push(next, o[k]);
          }
        } else push(next, o[step.key]);
      }
      nodes = next;
      if (!nodes.length) break;
    }
    return nodes;
  };
}

/**
 * Composite parameters: a direct evaluator for the items (`Observation | Observation.component`,
 * a union of plain paths or the type itself) and for a component expression relative to an item
 * whose element path is known (`code`, `value.as(Quantity)`, `value.as(dateTime) | value.as(Period)`).
 * Undefined when FHIRPath is needed.
 */
export function compileItems(expr: string): { fn: PathFn; itemPaths: string[] } | undefined {
  const parts = expr.split('|').map((x) => x.trim());
  const fns: PathFn[] = [];
  for (const part of parts) {
    if (/^[A-Z][A-Za-z]+$/.test(part)) {
      if (!elementsOf(part)) return undefined;
      fns.push((r: unknown) => ((r as Json)?.resourceType === part ? [r] : []));
      continue;
    }
    const steps = planSteps(part);
    if (!steps || steps.some((s) => s.choice)) return undefined;
    const info = elementsOf(part.split('.')[0])?.get(part);
    if (!info || info.types.length !== 1 || info.types[0] !== 'BackboneElement') return undefined;
    const fn = compilePath(part);
    if (!fn) return undefined;
    fns.push(fn);
  }
  return { fn: (r: unknown) => fns.flatMap((f) => f(r)), itemPaths: parts };
}

export type ItemFn = (item: unknown) => unknown[];

export function compileComponent(itemPaths: string[], expr: string): ItemFn | undefined {
  const keys: string[] = [];
  for (const part of expr.split('|').map((x) => x.trim())) {
    const m = /^([a-z][A-Za-z0-9]*)(?:\.as\(([A-Za-z]+)\))?$/.exec(part);
    if (!m) return undefined;
    const [, seg, asType] = m;
    for (const itemPath of itemPaths) {
      const type = itemPath.split('.')[0];
      const info = elementsOf(type)?.get(`${itemPath}.${seg}`);
      if (!info) return undefined;
      if (asType ? !info.choice || !info.types.includes(asType) : info.choice) return undefined;
    }
    keys.push(asType ? seg + upperFirst(asType) : seg);
  }
  return (item: unknown) => {
    const out: unknown[] = [];
    if (typeof item !== 'object' || item === null) return out;
    for (const k of keys) push(out, (item as Json)[k]);
    return out;
  };
}
