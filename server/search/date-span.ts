/**
 * Length classes of stored date ranges (idx_date.span, migrations/006_search_indexes.ts): class k
 * holds ranges with hi - lo at most DATE_SPAN_MS[k]; class DATE_SPAN_MS.length everything longer
 * or open-ended. The indexer assigns them; query.ts turns `hi > X` into `lo > X - max` per class.
 * Changing these numbers needs a migration that recomputes idx_date.span.
 */
export const DATE_SPAN_MS = [24 * 3600_000, 366 * 24 * 3600_000] as const;
