/** The CapabilityStatement, derived from the registry (types, interactions, search params, operations). */
import type { CapabilityStatement, CapabilityStatementRestResource } from 'fhir/r4';
import { OPERATIONS, registry } from '../resources';
import { isSupportedParam } from '../server/search/query';
import type { TenantSettings } from '../server/fhir/types';
import { capabilitySecurity } from '../server/auth/smart-config';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const pkg = require('../package.json');

const cache = new Map<string, CapabilityStatement>();
const jsonCache = new Map<string, string>();

/** The CapabilityStatement as JSON text, serialised once per base URL and settings. */
export function capabilityJson(baseUrl: string, settings: TenantSettings): string {
  const key = `${baseUrl}|${settings.requireIfMatch ? 1 : 0}`;
  let json = jsonCache.get(key);
  if (!json) {
    json = JSON.stringify(capabilityStatement(baseUrl, settings));
    jsonCache.set(key, json);
  }
  return json;
}

export function capabilityStatement(baseUrl: string, settings: TenantSettings): CapabilityStatement {
  const key = `${baseUrl}|${settings.requireIfMatch ? 1 : 0}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const resources: CapabilityStatementRestResource[] = [];
  for (const def of [...registry.values()].sort((a, b) => a.type.localeCompare(b.type))) {
    const ops = OPERATIONS.filter((o) => (o.types === '*' || o.types.includes(def.type)) && !o.level.every((l) => l === 'system'));
    resources.push({
      type: def.type,
      profile: `http://hl7.org/fhir/StructureDefinition/${def.type}`,
      interaction: def.interactions.map((code) => ({ code })),
      versioning: settings.requireIfMatch ? 'versioned-update' : 'versioned',
      readHistory: true,
      updateCreate: true,
      conditionalCreate: true,
      conditionalRead: 'full-support',
      conditionalUpdate: true,
      conditionalDelete: 'multiple',
      searchParam: [...def.searchParams.values()]
        .filter((p) => isSupportedParam(p) || p.code === '_id' || p.code === '_lastUpdated')
        .map((p) => ({ name: p.code, definition: p.url, type: p.type })),
      operation: ops.map((o) => ({ name: o.name, definition: o.definition })),
    });
  }
  const cs: CapabilityStatement = {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: pkg.name, version: pkg.version },
    implementation: { description: 'FHIR R4 server for small practices', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        security: capabilitySecurity(baseUrl),
        resource: resources,
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'history-system' }],
        operation: OPERATIONS.filter((o) => o.level.includes('system')).map((o) => ({ name: o.name, definition: o.definition })),
      },
    ],
  };
  cache.set(key, cs);
  return cs;
}
