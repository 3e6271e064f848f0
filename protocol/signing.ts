/**
 * Ed25519 request signing for the RPC API (scheme ALLEGRA-ED25519-V2).
 *
 * The signature covers every byte that can change a request's meaning: method, path with query, the
 * audience (the node id of the one agent the request is meant for, so a request captured at one agent is
 * useless at every other), every `x-allegra-*` header and the content type, the SHA-256 of the body
 * (declared in a signed header, so a verifier checks the signature BEFORE reading the body and only then
 * streams the body, comparing its hash), a millisecond timestamp and a random nonce.
 *
 * The verifier refuses a bad signature, a timestamp outside the allowed skew or older than the verifier
 * itself (a nonce cache that did not exist then cannot vouch for it), another audience, and a (key, nonce)
 * pair it has accepted before. A signed request is also a self-contained, verifiable record of who asked for
 * what (`SignedEnvelope`): the audit history keeps them.
 * Only node:crypto is used, so this module runs anywhere Node runs and does no I/O.
 */

import type { KeyObject } from 'node:crypto';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { DELEGATION_HEADER, delegatedSigner } from './delegation.js';
import { publicKeyFromHex, signBytes, verifyBytes } from './ed25519.js';

export { publicKeyFromHex, signBytes, verifyBytes };

export const SIGNATURE_HEADERS = {
  key: 'x-allegra-key',
  timestamp: 'x-allegra-timestamp',
  nonce: 'x-allegra-nonce',
  signature: 'x-allegra-signature',
  /** Node id of the agent the request is addressed to. */
  audience: 'x-allegra-audience',
  /** SHA-256 hex of the exact body bytes (of the empty string when there is no body). */
  contentSha256: 'x-allegra-content-sha256',
} as const;

const SCHEME = 'ALLEGRA-ED25519-V2';
const SIGNED_PREFIX = 'x-allegra-';
/** How far a request's timestamp may be from the verifier's clock. */
export const DEFAULT_MAX_SKEW_MS = 30_000;
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const HEX64 = /^[0-9a-f]{64}$/;

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

/**
 * A signed request as a record: the method, the exact path, and the signed headers (which include the key,
 * audience, timestamp, nonce, body hash and signature). Anyone can check it later with `verifyEnvelope`.
 */
export interface SignedEnvelope {
  method: string;
  path: string;
  headers: Record<string, string>;
}

type HeaderSource = Record<string, string | string[] | undefined>;

/** The headers a signature covers: every `x-allegra-*` (but the signature) and content-type, sorted. */
function signedHeaderBlock(headers: Record<string, string>): string {
  const names = Object.keys(headers)
    .filter((n) => (n.startsWith(SIGNED_PREFIX) && n !== SIGNATURE_HEADERS.signature) || n === 'content-type')
    .sort();
  // JSON keeps values unambiguous even if one held a separator character.
  return JSON.stringify(names.map((n) => [n, headers[n]]));
}

function canonical(method: string, path: string, headers: Record<string, string>): string {
  return [SCHEME, method.toUpperCase(), path, signedHeaderBlock(headers)].join('\n');
}

export interface SignInput {
  method: string;
  /** Path with query string, exactly as sent on the request line. */
  path: string;
  /** Node id of the agent the request is for. */
  audience: string;
  body?: Uint8Array | string;
  /** SHA-256 hex of the body, when the body is streamed rather than held in memory. */
  bodySha256?: string;
  /** Other headers the request carries; every `x-allegra-*` one and content-type are signed. */
  headers?: Record<string, string>;
  /** Override for tests; defaults to Date.now(). */
  now?: number;
}

/** Returns the complete header set to send: the given headers plus the signature headers. */
export function signRequest(keyPair: KeyPair, input: SignInput): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(input.headers ?? {})) headers[k.toLowerCase()] = v;
  headers[SIGNATURE_HEADERS.key] = keyPair.publicKeyHex;
  headers[SIGNATURE_HEADERS.audience] = input.audience;
  headers[SIGNATURE_HEADERS.timestamp] = String(input.now ?? Date.now());
  headers[SIGNATURE_HEADERS.nonce] = randomBytes(16).toString('hex');
  headers[SIGNATURE_HEADERS.contentSha256] = input.bodySha256 ?? (input.body === undefined ? EMPTY_SHA256 : sha256Hex(input.body));
  headers[SIGNATURE_HEADERS.signature] = signBytes(keyPair, canonical(input.method, input.path, headers));
  return headers;
}

/** `publicKey` is the key the request acts for: its signer's, or the owner's of a valid delegation (then `sessionKey` signed it). */
export type EnvelopeCheck = { ok: true; publicKey: string; bodySha256: string; sessionKey?: string } | { ok: false; reason: string };

/** Checks an envelope's signature and form only (no clock, audience or replay checks): for stored records. */
export function verifyEnvelope(envelope: SignedEnvelope): EnvelopeCheck {
  const h = envelope.headers;
  const key = h[SIGNATURE_HEADERS.key];
  const signature = h[SIGNATURE_HEADERS.signature];
  const bodySha256 = h[SIGNATURE_HEADERS.contentSha256];
  if (!key || !signature || !h[SIGNATURE_HEADERS.timestamp] || !h[SIGNATURE_HEADERS.nonce] || !h[SIGNATURE_HEADERS.audience] || !bodySha256)
    return { ok: false, reason: 'request is not signed' };
  if (!HEX64.test(key)) return { ok: false, reason: 'malformed public key' };
  if (!HEX64.test(bodySha256)) return { ok: false, reason: 'malformed content hash' };
  if (!verifyBytes(key, canonical(envelope.method, envelope.path, h), signature)) return { ok: false, reason: 'bad signature' };
  // A session key acting for its owner (`allegra ui`): from here on the request is the owner's.
  const delegation = h[DELEGATION_HEADER];
  if (delegation !== undefined) {
    const d = delegatedSigner(delegation, key, Number(h[SIGNATURE_HEADERS.timestamp]), envelope.method, envelope.path);
    if (!d.ok) return d;
    return { ok: true, publicKey: d.owner, bodySha256, sessionKey: key };
  }
  return { ok: true, publicKey: key, bodySha256 };
}

/** Collects the signed headers of a request into an envelope (lower-case names, first value of each). */
export function envelopeOf(method: string, path: string, headers: HeaderSource): SignedEnvelope {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const n = name.toLowerCase();
    const v = Array.isArray(value) ? value[0] : value;
    if (v !== undefined && (n.startsWith(SIGNED_PREFIX) || n === 'content-type')) out[n] = v;
  }
  return { method: method.toUpperCase(), path, headers: out };
}

export type VerifyResult =
  | { ok: true; publicKey: string; bodySha256: string; sessionKey?: string; envelope: SignedEnvelope }
  | { ok: false; reason: string };

export interface VerifyInput {
  method: string;
  /** Path with query string, exactly as received on the request line. */
  path: string;
  /** All of the request's headers: every `x-allegra-*` one present is part of what must be signed. */
  headers: HeaderSource;
}

export interface VerifierOptions {
  /** This verifier's own node id: requests addressed to anyone else are refused. */
  audience: string;
  maxSkewMs?: number;
  clock?: () => number;
  /**
   * Requests signed before this time are refused: the nonce cache only knows what it saw since then. Default:
   * when the verifier was created (a restarted agent refuses replays of requests captured before its restart).
   */
  notBefore?: number;
}

/**
 * Verifies signed requests for one audience and remembers accepted nonces until they could no longer pass
 * the skew check, so memory stays bounded by the request rate times the skew window.
 */
export class RequestVerifier {
  private readonly seen = new Map<string, number>();
  private readonly maxSkewMs: number;
  private readonly clock: () => number;
  readonly audience: string;
  private readonly notBefore: number;

  constructor(opts: VerifierOptions) {
    this.audience = opts.audience;
    this.maxSkewMs = opts.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
    this.clock = opts.clock ?? Date.now;
    this.notBefore = opts.notBefore ?? this.clock();
  }

  /** Checks the signature over the headers; the caller then checks the body against `bodySha256`. */
  verify(input: VerifyInput): VerifyResult {
    const envelope = envelopeOf(input.method, input.path, input.headers);
    const h = envelope.headers;
    const timestamp = h[SIGNATURE_HEADERS.timestamp];
    const nonce = h[SIGNATURE_HEADERS.nonce];
    if (!h[SIGNATURE_HEADERS.key] || !timestamp || !nonce || !h[SIGNATURE_HEADERS.signature])
      return { ok: false, reason: 'request is not signed' };
    if (!/^[0-9a-f]{16,64}$/.test(nonce)) return { ok: false, reason: 'malformed nonce' };
    const ts = Number(timestamp);
    if (!/^\d{1,16}$/.test(timestamp) || !Number.isSafeInteger(ts)) return { ok: false, reason: 'malformed timestamp' };
    const now = this.clock();
    if (Math.abs(now - ts) > this.maxSkewMs) return { ok: false, reason: 'stale request: timestamp outside the allowed clock skew' };
    if (ts < this.notBefore) return { ok: false, reason: 'stale request: signed before this agent started; sign it again' };
    const audience = h[SIGNATURE_HEADERS.audience];
    if (audience !== this.audience)
      return { ok: false, reason: `request is addressed to ${audience ? `node ${audience}` : 'no node'}, this is node ${this.audience}` };
    const check = verifyEnvelope(envelope);
    if (!check.ok) return check;

    this.prune(now);
    const nonceKey = `${h[SIGNATURE_HEADERS.key]}:${nonce}`;
    if (this.seen.has(nonceKey)) return { ok: false, reason: 'replayed request: nonce already used' };
    this.seen.set(nonceKey, ts + this.maxSkewMs);
    return { ...check, envelope };
  }

  /** Drops nonces whose timestamps are now stale anyway; Map iteration order is insertion order. */
  private prune(now: number): void {
    for (const [k, expiresAt] of this.seen) {
      if (expiresAt >= now) break;
      this.seen.delete(k);
    }
  }
}
