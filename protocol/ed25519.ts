/**
 * Ed25519 primitives over node:crypto: raw hex public keys (the identities users and ACLs name) and base64
 * signatures of arbitrary bytes. Kept apart from request signing so that records and delegations can use
 * them without importing each other. No I/O.
 */
import type { KeyObject } from 'node:crypto';
import { createPublicKey, sign, verify } from 'node:crypto';

const HEX64 = /^[0-9a-f]{64}$/;

/** What signs: a private key and its raw public key as lower-case hex. */
export interface Signer {
  privateKey: KeyObject;
  publicKeyHex: string;
}

export function publicKeyFromHex(hex: string): KeyObject {
  if (!HEX64.test(hex)) throw new Error('public key must be 64 lower-case hex characters');
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(hex, 'hex').toString('base64url') }, format: 'jwk' });
}

/** Signs arbitrary bytes with a key pair (records, tokens); base64 signature. */
export function signBytes(keyPair: Signer, data: string | Uint8Array): string {
  return sign(null, typeof data === 'string' ? Buffer.from(data) : data, keyPair.privateKey).toString('base64');
}

const keyCache = new Map<string, KeyObject>();

function cachedKey(hex: string): KeyObject | undefined {
  let key = keyCache.get(hex);
  if (key) return key;
  try {
    key = publicKeyFromHex(hex);
  } catch {
    return undefined;
  }
  if (keyCache.size > 10_000) keyCache.clear();
  keyCache.set(hex, key);
  return key;
}

/** Checks a base64 Ed25519 signature of `data` by the hex public key; never throws. */
export function verifyBytes(publicKeyHex: string, data: string | Uint8Array, signature: string): boolean {
  const key = cachedKey(publicKeyHex);
  if (!key) return false;
  try {
    return verify(null, typeof data === 'string' ? Buffer.from(data) : data, key, Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}
