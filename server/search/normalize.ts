/**
 * String search normalisation (FHIR string search default): case- and accent-insensitive,
 * punctuation ignored, runs of whitespace collapsed to one space. Index rows and search values
 * both go through this; after a change, existing index rows need a reindex.
 */
export function normalizeString(s: string): string {
  return s.normalize('NFD').replace(/\p{Diacritic}/gu, '').toLowerCase().replace(/\p{P}/gu, '').replace(/\s+/g, ' ').trim();
}
