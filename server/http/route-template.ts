/** A low-cardinality route label for logs and metrics (no ids, no values). */
export function routeTemplate(segments: string[]): string {
  const [type, second, third] = segments;
  if (!type) return '/fhir/:tenant';
  if (type.startsWith('$') || type === 'metadata' || type === '_history') return `/fhir/:tenant/${type}`;
  const parts = ['/fhir/:tenant/:type'];
  if (second !== undefined) parts.push(second.startsWith('$') || second.startsWith('_') ? second : ':id');
  if (third !== undefined) parts.push(third.startsWith('$') || third === '_history' ? third : ':x');
  if (segments.length > 3) parts.push(':vid');
  return parts.join('/');
}
