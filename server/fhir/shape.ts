/** _summary and _elements: subsetting a resource, tagged SUBSETTED as the spec asks. */
import type { FhirResource as Resource } from 'fhir/r4';
import { registry } from '../../resources';
import { badRequest } from './errors';

const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED', display: 'subsetted' };

function tagSubsetted(r: Record<string, unknown>): void {
  const meta = { ...((r.meta as Record<string, unknown>) ?? {}) };
  const tags = Array.isArray(meta.tag) ? [...meta.tag] : [];
  if (!tags.some((t) => t.code === 'SUBSETTED')) tags.push(SUBSETTED);
  meta.tag = tags;
  r.meta = meta;
}

function keep(resource: Resource, allowed: (key: string) => boolean): Resource {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(resource)) {
    if (k === 'resourceType' || k === 'id' || k === 'meta' || allowed(k)) out[k] = v;
  }
  tagSubsetted(out);
  return out as unknown as Resource;
}

function matchesElement(key: string, names: string[]): boolean {
  const base = key.startsWith('_') ? key.slice(1) : key;
  for (const n of names) {
    if (n.endsWith('[x]')) {
      const stem = n.slice(0, -3);
      if (base.startsWith(stem) && /^[A-Z]/.test(base.slice(stem.length))) return true;
    } else if (base === n) return true;
  }
  return false;
}

export type SummaryMode = 'true' | 'false' | 'text' | 'data' | 'count';

export function parseSummary(v: string | undefined): SummaryMode | undefined {
  if (v === undefined) return undefined;
  if (!['true', 'false', 'text', 'data', 'count'].includes(v)) {
    throw badRequest(`_summary must be one of true, false, text, data, count; not "${v}"`, ['_summary']);
  }
  return v as SummaryMode;
}

export function applySummary(resource: Resource, mode: SummaryMode | undefined): Resource {
  if (!mode || mode === 'false' || mode === 'count') return resource;
  if (mode === 'data') return keep(resource, (k) => k !== 'text');
  if (mode === 'text') {
    const mandatory = registry.get(resource.resourceType)?.mandatory ?? [];
    return keep(resource, (k) => k === 'text' || matchesElement(k, mandatory));
  }
  const summary = registry.get(resource.resourceType)?.summary ?? [];
  return keep(resource, (k) => matchesElement(k, summary));
}

export function parseElements(v: string | undefined): string[] | undefined {
  if (v === undefined) return undefined;
  const list = v.split(',').map((s) => s.trim()).filter(Boolean);
  for (const e of list) {
    if (!/^[A-Za-z][A-Za-z0-9]*(\[x\])?$/.test(e.replace(/^[A-Z][A-Za-z]+\./, ''))) {
      throw badRequest(`_elements entry "${e}" is not an element name`, ['_elements']);
    }
  }
  return list.map((e) => e.replace(/^[A-Z][A-Za-z]+\./, ''));
}

export function applyElements(resource: Resource, elements: string[] | undefined): Resource {
  if (!elements) return resource;
  // The spec: the named elements plus the mandatory (min >= 1) ones.
  const names = [...elements, ...(registry.get(resource.resourceType)?.mandatory ?? [])];
  return keep(resource, (k) => matchesElement(k, names));
}

/** Applies _summary/_elements if asked; returns undefined when nothing changes. */
export function shape(resource: Resource, summary?: SummaryMode, elements?: string[]): Resource {
  if (elements) return applyElements(resource, elements);
  return applySummary(resource, summary);
}
