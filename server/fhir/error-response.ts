/** Maps anything thrown while serving a request to a FHIR response with an OperationOutcome. */
import { FhirError, outcome } from './errors';
import type { FhirResponse } from './types';
import { logger } from '../log';

interface PgError {
  code?: string;
  message?: string;
}

export function errorToResponse(err: unknown): FhirResponse {
  if (err instanceof FhirError) return { status: err.status, headers: err.headers, body: err.toOutcome() };
  const pg = err as PgError;
  if (pg && typeof pg.code === 'string' && /^[0-9A-Z]{5}$/.test(pg.code)) {
    if (pg.code === '23505') {
      return fail(409, 'conflict', 'A concurrent request wrote the same resource; retry with the current version');
    }
    if (pg.code === '40001' || pg.code === '40P01') return fail(409, 'conflict', 'Concurrent update conflict; retry the request');
    if (pg.code.startsWith('22')) {
      logger.warn({ pgCode: pg.code }, 'database rejected a value');
      return fail(400, 'invalid', 'A value in the request is out of range for this server');
    }
    if (pg.code === '57014') return fail(503, 'timeout', 'The database query took too long');
  }
  logger.error({ err: sanitize(err) }, 'unhandled error');
  return fail(500, 'exception', 'Internal server error; the request id in X-Request-Id identifies it in the logs');
}

function fail(status: number, code: string, diagnostics: string): FhirResponse {
  return { status, headers: {}, body: outcome([{ severity: 'error', code: code as never, diagnostics }]) };
}

/** Logs carry the error type and stack, never the message of a DB error (it may quote values). */
function sanitize(err: unknown): Record<string, unknown> {
  if (err instanceof Error) return { type: err.name, code: (err as PgError).code, stack: err.stack?.split('\n').slice(1, 6).join('\n') };
  return { type: typeof err };
}
