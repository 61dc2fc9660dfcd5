import { badRequest } from './errors';

export const etagOf = (version: number) => `W/"${version}"`;

/** Parses W/"3" or "3" into 3. */
export function parseEtag(value: string, header = 'If-Match'): number {
  const m = /^\s*(?:W\/)?"(\d+)"\s*$/.exec(value) ?? /^\s*(\d+)\s*$/.exec(value);
  if (!m) throw badRequest(`${header} must be a version ETag like W/"3", not ${JSON.stringify(value)}`);
  return Number(m[1]);
}

export const httpDate = (d: Date) => d.toUTCString();
