/**
 * Ed25519 request signing for the RPC API.
 *
 * A request is signed over a canonical string of method, path (with query), the SHA-256 of the exact body
 * bytes, a millisecond timestamp and a random nonce. The verifier refuses a signature that does not match,
 * a timestamp outside the allowed skew (stale), and a (key, nonce) pair it has already accepted (replay).
 * Only node:crypto is used, so this module runs anywhere Node runs and does no I/O.
 */

import type { KeyObject } from 'node:crypto';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';

export const SIGNATURE_HEADERS = {
  key: 'x-allegra-key',
  timestamp: 'x-allegra-timestamp',
  nonce: 'x-allegra-nonce',
  signature: 'x-allegra-signature',
} as const;

const SCHEME = 'ALLEGRA-ED25519-V1';
/** How far a request's timestamp may be from the verifier's clock. */
export const DEFAULT_MAX_SKEW_MS = 30_000;

export interface KeyPair {
  privateKey: KeyObject;
  /** Raw 32-byte public key as lower-case hex: the identity users and ACLs refer to. */
  publicKeyHex: string;
}

export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKeyHex: publicKeyToHex(publicKey) };
}

export function publicKeyToHex(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' });
  if (!jwk.x) throw new Error('not an Ed25519 public key');
  return Buffer.from(jwk.x, 'base64url').toString('hex');
}

export function publicKeyFromHex(hex: string): KeyObject {
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error('public key must be 64 lower-case hex characters');
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(hex, 'hex').toString('base64url') }, format: 'jwk' });
}

/** Serialize a private key as PKCS#8 PEM (the format of `~/.allegra/key`). */
export function privateKeyToPem(keyPair: KeyPair): string {
  return keyPair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

export function keyPairFromPem(pem: string): KeyPair {
  const privateKey = createPrivateKey(pem);
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('key is not Ed25519');
  return { privateKey, publicKeyHex: publicKeyToHex(createPublicKey(privateKey)) };
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

function canonical(method: string, path: string, bodyHash: string, timestamp: string, nonce: string): string {
  return [SCHEME, method.toUpperCase(), path, bodyHash, timestamp, nonce].join('\n');
}

export interface SignInput {
  method: string;
  /** Path with query string, exactly as sent on the request line. */
  path: string;
  body?: Uint8Array | string;
  /** SHA-256 hex of the body, when the body is streamed rather than held in memory. */
  bodySha256?: string;
  /** Override for tests; defaults to Date.now(). */
  now?: number;
}

/** Returns the headers to add to a request. */
export function signRequest(keyPair: KeyPair, input: SignInput): Record<string, string> {
  const timestamp = String(input.now ?? Date.now());
  const nonce = randomBytes(16).toString('hex');
  const bodyHash = input.bodySha256 ?? sha256Hex(input.body ?? '');
  const signature = sign(null, Buffer.from(canonical(input.method, input.path, bodyHash, timestamp, nonce)), keyPair.privateKey);
  return {
    [SIGNATURE_HEADERS.key]: keyPair.publicKeyHex,
    [SIGNATURE_HEADERS.timestamp]: timestamp,
    [SIGNATURE_HEADERS.nonce]: nonce,
    [SIGNATURE_HEADERS.signature]: signature.toString('base64'),
  };
}

export type VerifyResult = { ok: true; publicKey: string } | { ok: false; reason: string };

export interface VerifyInput {
  method: string;
  path: string;
  /** The exact body bytes, or their SHA-256 hex when the body was streamed elsewhere (e.g. to disk). */
  body: Uint8Array | string | { sha256: string };
  headers: Record<string, string | string[] | undefined> | ((name: string) => string | undefined | null);
}

/**
 * Verifies signatures and remembers accepted nonces until they could no longer pass the skew check,
 * so memory stays bounded by the request rate times the skew window.
 */
export class RequestVerifier {
  private readonly seen = new Map<string, number>();
  private readonly maxSkewMs: number;
  private readonly clock: () => number;
  private readonly keyCache = new Map<string, KeyObject>();

  constructor(opts: { maxSkewMs?: number; clock?: () => number } = {}) {
    this.maxSkewMs = opts.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
    this.clock = opts.clock ?? Date.now;
  }

  verify(input: VerifyInput): VerifyResult {
    const header = (name: string): string | undefined => {
      if (typeof input.headers === 'function') return input.headers(name) ?? undefined;
      const v = input.headers[name];
      return Array.isArray(v) ? v[0] : v;
    };
    const key = header(SIGNATURE_HEADERS.key);
    const timestamp = header(SIGNATURE_HEADERS.timestamp);
    const nonce = header(SIGNATURE_HEADERS.nonce);
    const signature = header(SIGNATURE_HEADERS.signature);
    if (!key || !timestamp || !nonce || !signature) return { ok: false, reason: 'request is not signed' };
    if (!/^[0-9a-f]{64}$/.test(key)) return { ok: false, reason: 'malformed public key' };
    if (!/^[0-9a-f]{16,64}$/.test(nonce)) return { ok: false, reason: 'malformed nonce' };
    const ts = Number(timestamp);
    if (!Number.isSafeInteger(ts)) return { ok: false, reason: 'malformed timestamp' };
    const now = this.clock();
    if (Math.abs(now - ts) > this.maxSkewMs) return { ok: false, reason: 'stale request: timestamp outside the allowed clock skew' };

    let publicKey = this.keyCache.get(key);
    if (!publicKey) {
      try {
        publicKey = publicKeyFromHex(key);
      } catch {
        return { ok: false, reason: 'malformed public key' };
      }
      if (this.keyCache.size > 10_000) this.keyCache.clear();
      this.keyCache.set(key, publicKey);
    }
    const bodyHash = typeof input.body === 'object' && 'sha256' in input.body ? input.body.sha256 : sha256Hex(input.body);
    const message = Buffer.from(canonical(input.method, input.path, bodyHash, timestamp, nonce));
    let valid = false;
    try {
      valid = verify(null, message, publicKey, Buffer.from(signature, 'base64'));
    } catch {
      valid = false;
    }
    if (!valid) return { ok: false, reason: 'bad signature' };

    this.prune(now);
    const nonceKey = `${key}:${nonce}`;
    if (this.seen.has(nonceKey)) return { ok: false, reason: 'replayed request: nonce already used' };
    this.seen.set(nonceKey, ts + this.maxSkewMs);
    return { ok: true, publicKey: key };
  }

  /** Drops nonces whose timestamps are now stale anyway; Map iteration order is insertion order. */
  private prune(now: number): void {
    for (const [k, expiresAt] of this.seen) {
      if (expiresAt >= now) break;
      this.seen.delete(k);
    }
  }
}
