/**
 * Signatures on registry records. A record a gateway acts on carries the signature of the key that may
 * write it (a replica record: the node that runs the replica), over the record's canonical JSON, so a
 * process that can write the registry but holds no node key cannot point traffic anywhere.
 */
import { type KeyPair, signBytes, verifyBytes } from './signing.js';

export interface RecordSignature {
  /** Hex Ed25519 public key of the signer. */
  key: string;
  /** Base64 signature over `RECORD_SCHEME\n` + the canonical JSON of the record without `signature`. */
  sig: string;
}

const RECORD_SCHEME = 'ALLEGRA-RECORD-V1';

/** JSON with object keys sorted at every depth and no whitespace: one byte string per value. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

function signedBytes(record: object): string {
  const { signature: _ignored, ...rest } = record as { signature?: unknown };
  return `${RECORD_SCHEME}\n${canonicalJson(rest)}`;
}

export function signRecord<T extends object>(keyPair: KeyPair, record: T): T & { signature: RecordSignature } {
  const { signature: _old, ...rest } = record as T & { signature?: unknown };
  return { ...(rest as T), signature: { key: keyPair.publicKeyHex, sig: signBytes(keyPair, signedBytes(rest)) } };
}

/** True when `record.signature` is a valid signature by `expectedKey` over the rest of the record. */
export function verifyRecord(record: { signature?: RecordSignature }, expectedKey: string): boolean {
  const s = record.signature;
  if (!s || s.key !== expectedKey) return false;
  return verifyBytes(expectedKey, signedBytes(record), s.sig);
}
