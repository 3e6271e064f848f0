/**
 * Delegations: "session key S acts for owner key K from T0 until T1", signed by K.
 *
 * `allegra ui` makes a throwaway session key pair, signs a delegation with the user's key and hands the
 * browser only the session key and the delegation (in the URL's fragment, which is never sent to a server).
 * The browser signs every request with the session key exactly as the CLI signs with the owner key and
 * carries the delegation in the `x-allegra-delegation` header; being an `x-allegra-*` header it is covered
 * by the request's own signature. Verifiers (`verifyEnvelope`) then treat the request as K's, so every
 * check that follows (ownership, team keys, history, route grants at the gateways) sees the owner.
 *
 * Bounded on purpose: at most 12 hours, only while the request's own timestamp lies inside the window
 * (stored requests stay verifiable later, without a clock), and never for irreversible ownership changes
 * (revoke, governance votes, deleting an instance) or node-to-node routes: those need the real key. Expiry is the revocation.
 * Pure functions over node:crypto, no I/O.
 */
import { type Signer, signBytes, verifyBytes } from './ed25519.js';

export const DELEGATION_HEADER = 'x-allegra-delegation';
/** Longest life of a delegation. */
export const MAX_DELEGATION_MS = 12 * 60 * 60 * 1000;
/** Largest encoded delegation accepted: a real one is about 330 characters. */
export const MAX_DELEGATION_CHARS = 1024;
const DOMAIN = 'ALLEGRA-DELEGATION-V1';
const HEX64 = /^[0-9a-f]{64}$/;

export interface Delegation {
  v: 1;
  /** The key the session acts for (64 hex). */
  owner: string;
  /** The session's public key (64 hex): the key that signs the requests. */
  session: string;
  /** Milliseconds since the epoch: the window in which requests signed by the session count as the owner's. */
  notBefore: number;
  expiresAt: number;
  /** Base64 Ed25519 signature of the owner over the other fields. */
  signature: string;
}

function signedBytes(d: Omit<Delegation, 'signature'>): string {
  // A fixed-order array: the same bytes for the signer and every verifier (browser included).
  return `${DOMAIN}\n${JSON.stringify([d.v, d.owner, d.session, d.notBefore, d.expiresAt])}`;
}

/** The owner signs a delegation to `sessionKeyHex` valid for `ttlMs` from `now`. */
export function delegate(owner: Signer, sessionKeyHex: string, ttlMs: number, now = Date.now()): Delegation {
  if (!HEX64.test(sessionKeyHex)) throw new Error('session key must be 64 lower-case hex characters');
  if (!Number.isInteger(ttlMs) || ttlMs <= 0 || ttlMs > MAX_DELEGATION_MS) throw new Error('a delegation lasts at most 12 hours');
  const body = { v: 1 as const, owner: owner.publicKeyHex, session: sessionKeyHex, notBefore: now, expiresAt: now + ttlMs };
  return { ...body, signature: signBytes(owner, signedBytes(body)) };
}

export function encodeDelegation(d: Delegation): string {
  return Buffer.from(JSON.stringify(d)).toString('base64url');
}

export type DelegationCheck = { ok: true; delegation: Delegation } | { ok: false; reason: string };

/** Decodes a header value and checks its form and the owner's signature (not the time: see `delegatedSigner`). */
export function decodeDelegation(value: string): DelegationCheck {
  if (value.length > MAX_DELEGATION_CHARS || !/^[A-Za-z0-9_-]+$/.test(value)) return { ok: false, reason: 'malformed delegation' };
  let d: Partial<Delegation>;
  try {
    d = JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed delegation' };
  }
  if (
    typeof d !== 'object' ||
    d === null ||
    d.v !== 1 ||
    typeof d.owner !== 'string' ||
    !HEX64.test(d.owner) ||
    typeof d.session !== 'string' ||
    !HEX64.test(d.session) ||
    !Number.isSafeInteger(d.notBefore) ||
    !Number.isSafeInteger(d.expiresAt) ||
    typeof d.signature !== 'string'
  )
    return { ok: false, reason: 'malformed delegation' };
  const delegation = d as Delegation;
  if (delegation.expiresAt <= delegation.notBefore || delegation.expiresAt - delegation.notBefore > MAX_DELEGATION_MS)
    return { ok: false, reason: 'delegation window is longer than 12 hours' };
  if (!verifyBytes(delegation.owner, signedBytes(delegation), delegation.signature))
    return { ok: false, reason: 'delegation is not signed by its owner' };
  return { ok: true, delegation };
}

/** Routes a session key may never use: irreversible changes (revoke, governance votes, delete) and node-only endpoints. */
function outOfScope(method: string, path: string): boolean {
  const p = path.split('?')[0] ?? '';
  if (p.startsWith('/v1/blobs/') || /\/logs\/member$/.test(p)) return true;
  if (method === 'DELETE' && /^\/v1\/instances\/[^/]+$/.test(p)) return true;
  return method === 'POST' && /^\/v1\/instances\/[^/]+\/(revoke|proposals(\/[^/]+\/approve)?)$/.test(p);
}

/**
 * The key a request signed by `signer` at `timestamp` acts for, given its delegation header: the owner when
 * the delegation names `signer` as its session, was signed by the owner, and covers the timestamp and route.
 */
export function delegatedSigner(
  header: string,
  signer: string,
  timestamp: number,
  method: string,
  path: string,
): { ok: true; owner: string } | { ok: false; reason: string } {
  const check = decodeDelegation(header);
  if (!check.ok) return check;
  const d = check.delegation;
  if (d.session !== signer) return { ok: false, reason: 'delegation is for another session key' };
  if (timestamp < d.notBefore) return { ok: false, reason: 'delegation is not valid yet' };
  if (timestamp > d.expiresAt) return { ok: false, reason: 'delegation expired: run `allegra ui` again' };
  if (outOfScope(method, path)) return { ok: false, reason: `a UI session may not ${method} ${path.split('?')[0]}: use the CLI` };
  return { ok: true, owner: d.owner };
}
