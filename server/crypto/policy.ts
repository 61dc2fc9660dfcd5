/**
 * What is encrypted at rest (docs/security.md, "Encryption at rest"):
 *  - the narrative of Composition (Composition.text.div and every section's text.div, nested
 *    sections included): the SOAP notes' free text;
 *  - the value of every Identifier, anywhere in any resource, whose system is a US Social
 *    Security Number (http://hl7.org/fhir/sid/us-ssn) or a payment reference (a Stripe id: any
 *    system under https://stripe.com/, e.g. https://stripe.com/payment_intent).
 * Everything else is stored as sent. Encrypted identifier values are searchable by exact value
 * through a blind index (blind-index.ts).
 */
export const SSN_SYSTEM = 'http://hl7.org/fhir/sid/us-ssn';
export const PAYMENT_SYSTEM_PREFIX = 'https://stripe.com/';

/** The extension that carries a ciphertext in stored JSON. Reserved: clients may not send it. */
export const ENCRYPTED_EXTENSION = 'urn:fhir-practice-server:encrypted';

/** Types whose narrative (text.div, section.text.div) is encrypted. */
export const NARRATIVE_TYPES = new Set(['Composition']);

export function isEncryptedSystem(system: unknown): system is string {
  return typeof system === 'string' && (system === SSN_SYSTEM || system.startsWith(PAYMENT_SYSTEM_PREFIX));
}

/** Cheap test on the serialized resource: false means there is certainly nothing to encrypt. */
export function mayHoldSecrets(type: string, json: string): boolean {
  return NARRATIVE_TYPES.has(type) || json.includes('sid/us-ssn') || json.includes(PAYMENT_SYSTEM_PREFIX);
}

/** The value as it is compared: SSNs without their dashes and spaces, other values as they are. */
export function normalizeSecretValue(system: string | undefined, value: string): string {
  return system === SSN_SYSTEM ? value.replace(/[\s-]/g, '') : value;
}

/**
 * The query string with the values of encrypted identifiers replaced (for the audit trail, which
 * records each search's query): `identifier=http://hl7.org/fhir/sid/us-ssn|123456789` keeps the
 * system and loses the number. Handles raw and percent-encoded separators.
 */
export function redactSecretQuery(query: string): string {
  return query.replace(/(sid(?:\/|%2F)us-ssn|stripe\.com(?:\/|%2F)[A-Za-z0-9_.-]*)(\||%7C)[^&,]*/gi, '$1$2[redacted]');
}
