/** String search normalisation: case- and accent-insensitive (FHIR string search default). */
export function normalizeString(s: string): string {
  return s.normalize('NFD').replace(/\p{Diacritic}/gu, '').toLowerCase().trim();
}
