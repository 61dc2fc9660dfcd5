/**
 * Blind index: encrypted identifier values are indexed (idx_token.code, and Reference.identifier
 * urls) as a keyed hash of the value, HMAC-SHA256 under the tenant's blind-index key, so an exact
 * token search still finds them while the index holds nothing readable. Same value, same hash
 * (that is what makes it searchable); without the key the hash cannot be computed or reversed by
 * trying all 10^9 SSNs.
 */
import { createHmac } from 'node:crypto';
import { normalizeSecretValue, PAYMENT_SYSTEM_PREFIX, SSN_SYSTEM } from './policy';

export type BlindIndex = (value: string, system?: string) => string;

export const BLIND_PREFIX = 'b1.';

export function blindIndexWith(key: Buffer): BlindIndex {
  return (value, system) => BLIND_PREFIX + createHmac('sha256', key).update(normalizeSecretValue(system, value)).digest('base64url');
}

/** The codes a token search for `value` must match: the value itself and its blind hashes (as an
 * SSN, as a payment id), for a search that gives no system or a system that is not encrypted. */
export function codeCandidates(blind: BlindIndex | undefined, value: string): string[] {
  if (!blind) return [value];
  return [...new Set([value, blind(value, SSN_SYSTEM), blind(value, PAYMENT_SYSTEM_PREFIX)])];
}
