/**
 * Encrypting and decrypting the protected fields of one resource (policy.ts says which). Stored
 * JSON stays valid FHIR: an encrypted identifier keeps its system and loses its value, which moves
 * into an extension on the primitive (`_value`); an encrypted narrative keeps a placeholder div
 * and carries the ciphertext in an extension of the Narrative.
 *
 *   {"system":"http://hl7.org/fhir/sid/us-ssn","_value":{"extension":[{"url":ENCRYPTED_EXTENSION,"valueString":"e1.3.…"}]}}
 *
 * A ciphertext is `e1.<data key version>.<AES-256-GCM, base64url>`, with the resource's
 * tenant/type/id as associated data (a ciphertext copied into another resource does not open).
 */
import { ENCRYPTED_EXTENSION, isEncryptedSystem, NARRATIVE_TYPES } from './policy';

export const PLACEHOLDER_DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><p>(encrypted at rest)</p></div>';

type Obj = Record<string, unknown>;
type Extension = { url?: string; valueString?: string };
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function withCiphertext(holder: unknown, ciphertext: string): Obj {
  const h = isObj(holder) ? holder : {};
  const ext = Array.isArray(h.extension) ? (h.extension as Extension[]) : [];
  return { ...h, extension: [...ext, { url: ENCRYPTED_EXTENSION, valueString: ciphertext }] };
}

/** Takes the ciphertext out of `holder.extension`; undefined when there is none. */
function takeCiphertext(holder: Obj): string | undefined {
  if (!Array.isArray(holder.extension)) return undefined;
  const ext = holder.extension as Extension[];
  const k = ext.findIndex((e) => isObj(e) && e.url === ENCRYPTED_EXTENSION);
  if (k < 0) return undefined;
  const text = ext[k].valueString;
  const rest = ext.filter((_, i) => i !== k);
  if (rest.length) holder.extension = rest;
  else delete holder.extension;
  return typeof text === 'string' ? text : undefined;
}

function sealIdentifiers(node: unknown, seal: (plain: string) => string): void {
  if (Array.isArray(node)) {
    for (const x of node) sealIdentifiers(x, seal);
    return;
  }
  if (!isObj(node)) return;
  if (isEncryptedSystem(node.system) && typeof node.value === 'string') {
    node._value = withCiphertext(node._value, seal(node.value));
    delete node.value;
  }
  for (const k in node) {
    const v = node[k];
    if (typeof v === 'object' && v !== null) sealIdentifiers(v, seal);
  }
}

function sealNarrative(n: unknown, seal: (plain: string) => string): void {
  if (!isObj(n) || typeof n.div !== 'string') return;
  const sealed = withCiphertext(n, seal(n.div));
  n.extension = sealed.extension;
  n.div = PLACEHOLDER_DIV;
}

function sealSections(sections: unknown, seal: (plain: string) => string): void {
  if (!Array.isArray(sections)) return;
  for (const s of sections) {
    if (!isObj(s)) continue;
    sealNarrative(s.text, seal);
    sealSections(s.section, seal);
  }
}

/** Encrypts the protected fields of `resource` in place (pass a copy). Returns how many. */
export function sealFields(resource: Obj, seal: (plain: string) => string): number {
  let n = 0;
  const counting = (plain: string) => {
    n++;
    return seal(plain);
  };
  sealIdentifiers(resource, counting);
  if (NARRATIVE_TYPES.has(resource.resourceType as string)) {
    sealNarrative(resource.text, counting);
    sealSections(resource.section, counting);
  }
  return n;
}

/** Decrypts every ciphertext in `node` in place. */
export function openFields(node: unknown, open: (ciphertext: string) => string): void {
  if (Array.isArray(node)) {
    for (const x of node) openFields(x, open);
    return;
  }
  if (!isObj(node)) return;
  if (isObj(node._value)) {
    const c = takeCiphertext(node._value);
    if (c !== undefined) {
      node.value = open(c);
      if (!Object.keys(node._value).length) delete node._value;
    }
  }
  if (typeof node.div === 'string') {
    const c = takeCiphertext(node);
    if (c !== undefined) node.div = open(c);
  }
  for (const k in node) {
    const v = node[k];
    if (typeof v === 'object' && v !== null) openFields(v, open);
  }
}
