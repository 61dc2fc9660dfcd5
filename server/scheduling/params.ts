/** Operation input: query parameters (GET) and/or a Parameters body (POST), IHE and Argonaut names. */
import type { FhirResource as Resource, Parameters, ParametersParameter } from 'fhir/r4';
import { badRequest } from '../fhir/errors';
import type { FhirRequest } from '../fhir/types';

export interface OpInput {
  strings(...names: string[]): string[];
  string(...names: string[]): string | undefined;
  resource(...names: string[]): Resource | undefined;
  /** A CodeableConcept or string parameter as a CodeableConcept. */
  concept(...names: string[]): { text?: string; coding?: unknown[] } | undefined;
}

function valueText(p: ParametersParameter): string | undefined {
  if (p.valueReference?.reference) return p.valueReference.reference;
  for (const [k, v] of Object.entries(p)) {
    if (!k.startsWith('value')) continue;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return String(v);
    if (k === 'valueCoding' && v && typeof v === 'object') {
      const c = v as { system?: string; code?: string };
      return c.system ? `${c.system}|${c.code ?? ''}` : c.code;
    }
  }
  return undefined;
}

export function opInput(req: FhirRequest): OpInput {
  const body = req.body as Parameters | Resource | undefined;
  if (body !== undefined && (typeof body !== 'object' || body === null || Array.isArray(body))) throw badRequest('The operation body must be a Parameters resource');
  const params = body && body.resourceType === 'Parameters' ? ((body as Parameters).parameter ?? []) : [];
  if (!Array.isArray(params)) throw badRequest('Parameters.parameter must be an array');
  const all = (names: string[]) => params.filter((p) => p && names.includes(p.name));
  return {
    strings: (...names) => [
      ...req.query.filter(([k]) => names.includes(k)).flatMap(([, v]) => v.split(',')).map((v) => v.trim()).filter(Boolean),
      ...all(names).map(valueText).filter((v): v is string => !!v),
    ],
    string(...names) {
      return this.strings(...names)[0];
    },
    resource: (...names) => {
      const p = all(names).find((x) => x.resource);
      if (p) return p.resource as Resource;
      return undefined;
    },
    concept: (...names) => {
      const p = all(names)[0];
      if (p?.valueCodeableConcept) return p.valueCodeableConcept as { text?: string; coding?: unknown[] };
      const text = p ? valueText(p) : req.query.find(([k]) => names.includes(k))?.[1];
      return text ? { text } : undefined;
    },
  };
}

/** An instant parameter: a FHIR dateTime (date or date-time with a zone). */
export function instant(name: string, v: string | undefined, required = true): Date | undefined {
  if (!v) {
    if (required) throw badRequest(`The parameter "${name}" is required (a date or dateTime, e.g. 2026-03-02 or 2026-03-02T09:00:00Z)`, [name]);
    return undefined;
  }
  if (!/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$/.test(v)) {
    throw badRequest(`"${name}" must be a date or a dateTime with a time zone (e.g. 2026-03-02T09:00:00Z), not "${v}"`, [name]);
  }
  const d = new Date(/T/.test(v) ? v : `${v}T00:00:00Z`);
  if (Number.isNaN(d.getTime())) throw badRequest(`"${name}" is not a valid date: "${v}"`, [name]);
  return d;
}

/** "Practitioner/12", an absolute URL to it, or a bare id -> "Practitioner/12". */
export function typedRef(type: string, v: string, name: string): string {
  const m = new RegExp(`(?:^|/)${type}/([A-Za-z0-9\\-.]{1,64})$`).exec(v) ?? /^([A-Za-z0-9\-.]{1,64})$/.exec(v);
  if (!m) throw badRequest(`"${name}" must reference a ${type} (${type}/{id}), not "${v}"`, [name]);
  return `${type}/${m[1]}`;
}
