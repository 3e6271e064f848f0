import { describe, expect, it } from 'vitest';
import { DELEGATION_HEADER, decodeDelegation, delegate, encodeDelegation, MAX_DELEGATION_MS } from '../../../protocol/delegation.js';
import { signBytes } from '../../../protocol/ed25519.js';
import { checkGrant } from '../../../protocol/grants.js';
import { envelopeOf, generateKeyPair, RequestVerifier, signRequest, verifyEnvelope } from '../../../protocol/signing.js';

const NODE = 'n-target';
const T0 = 1_800_000_000_000;
const HOUR = 3_600_000;

function setup(ttl = HOUR) {
  const owner = generateKeyPair();
  const session = generateKeyPair();
  const delegation = delegate(owner, session.publicKeyHex, ttl, T0);
  return { owner, session, delegation, header: encodeDelegation(delegation) };
}

function sign(
  key: ReturnType<typeof generateKeyPair>,
  header: string,
  opts: { now?: number; method?: string; path?: string; body?: string } = {},
) {
  return signRequest(key, {
    method: opts.method ?? 'POST',
    path: opts.path ?? '/v1/instances/demo/stop',
    audience: NODE,
    body: opts.body,
    headers: { [DELEGATION_HEADER]: header },
    now: opts.now ?? T0 + 1000,
  });
}

const verifierAt = (now: number) => new RequestVerifier({ audience: NODE, clock: () => now, notBefore: 0 });
const check = (now: number, headers: Record<string, string>, method = 'POST', path = '/v1/instances/demo/stop') =>
  verifierAt(now).verify({ method, path, headers });

describe('delegations (allegra ui sessions)', () => {
  it('a request signed by the session key with its delegation acts for the owner', () => {
    const { owner, session, header } = setup();
    const result = check(T0 + 1000, sign(session, header));
    expect(result).toMatchObject({ ok: true, publicKey: owner.publicKeyHex, sessionKey: session.publicKeyHex });
  });

  it('a stored request stays verifiable as the owner’s without a clock (history, route grants)', () => {
    const { owner, session, header } = setup();
    const body = JSON.stringify({ port: 3000 });
    const headers = signRequest(session, {
      method: 'POST',
      path: '/v1/instances/demo/expose',
      audience: NODE,
      body,
      headers: { 'content-type': 'application/json', [DELEGATION_HEADER]: header },
      now: T0 + 5000,
    });
    const envelope = envelopeOf('POST', '/v1/instances/demo/expose', headers);
    expect(verifyEnvelope(envelope)).toMatchObject({ ok: true, publicKey: owner.publicKeyHex });
    expect(checkGrant({ envelope, body })).toMatchObject({ ok: true, signer: owner.publicKeyHex });
  });

  it('refuses a delegation forged by another key in the owner’s name', () => {
    const { owner, session } = setup();
    const mallory = generateKeyPair();
    const forged = delegate(mallory, session.publicKeyHex, HOUR, T0);
    const header = encodeDelegation({ ...forged, owner: owner.publicKeyHex });
    expect(check(T0 + 1000, sign(session, header))).toEqual({ ok: false, reason: 'delegation is not signed by its owner' });
  });

  it('refuses a delegation whose window was widened after signing', () => {
    const { session, delegation } = setup();
    const header = encodeDelegation({ ...delegation, expiresAt: delegation.expiresAt + HOUR });
    expect(check(T0 + 1000, sign(session, header))).toEqual({ ok: false, reason: 'delegation is not signed by its owner' });
  });

  it('refuses a stolen delegation used with another session key', () => {
    const { header } = setup();
    const thief = generateKeyPair();
    expect(check(T0 + 1000, sign(thief, header))).toEqual({ ok: false, reason: 'delegation is for another session key' });
  });

  it('refuses requests signed after the delegation expired or before it began', () => {
    const { session, header } = setup();
    const late = T0 + HOUR + 1;
    expect(check(late, sign(session, header, { now: late }))).toMatchObject({ ok: false, reason: expect.stringMatching(/expired/) });
    const early = T0 - 1;
    expect(check(early, sign(session, header, { now: early }))).toMatchObject({ ok: false, reason: 'delegation is not valid yet' });
  });

  it('refuses the replay of a delegated request', () => {
    const { session, header } = setup();
    const verifier = verifierAt(T0 + 1000);
    const headers = sign(session, header);
    expect(verifier.verify({ method: 'POST', path: '/v1/instances/demo/stop', headers }).ok).toBe(true);
    expect(verifier.verify({ method: 'POST', path: '/v1/instances/demo/stop', headers })).toEqual({
      ok: false,
      reason: 'replayed request: nonce already used',
    });
  });

  it('refuses a delegation header swapped after the request was signed (it is covered by the signature)', () => {
    const a = setup();
    const b = setup();
    const headers = { ...sign(a.session, a.header), [DELEGATION_HEADER]: b.header };
    expect(check(T0 + 1000, headers)).toEqual({ ok: false, reason: 'bad signature' });
  });

  it('never lets a session revoke, vote on governance, delete an instance or act as a node', () => {
    const { session, header } = setup();
    for (const path of ['/v1/instances/demo/revoke', '/v1/instances/demo/proposals', '/v1/instances/demo/proposals/p1/approve']) {
      const result = check(T0 + 1000, sign(session, header, { path, body: '{}' }), 'POST', path);
      expect(result).toMatchObject({ ok: false, reason: expect.stringMatching(/UI session may not/) });
    }
    const del = '/v1/instances/demo';
    expect(check(T0 + 1000, sign(session, header, { method: 'DELETE', path: del }), 'DELETE', del)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/UI session may not DELETE/),
    });
    const blob = `/v1/blobs/${'a'.repeat(64)}`;
    expect(check(T0 + 1000, sign(session, header, { method: 'GET', path: blob }), 'GET', blob).ok).toBe(false);
  });

  it('bounds the life and size of a delegation', () => {
    const owner = generateKeyPair();
    const session = generateKeyPair();
    expect(() => delegate(owner, session.publicKeyHex, MAX_DELEGATION_MS + 1, T0)).toThrow(/12 hours/);
    // Signed by the owner but too long: refused all the same (another tool could have made it).
    const body = { v: 1 as const, owner: owner.publicKeyHex, session: session.publicKeyHex, notBefore: T0, expiresAt: T0 + 13 * HOUR };
    const signature = signBytes(
      owner,
      `ALLEGRA-DELEGATION-V1\n${JSON.stringify([1, body.owner, body.session, body.notBefore, body.expiresAt])}`,
    );
    expect(decodeDelegation(encodeDelegation({ ...body, signature }))).toEqual({
      ok: false,
      reason: 'delegation window is longer than 12 hours',
    });
    expect(decodeDelegation('A'.repeat(2000))).toEqual({ ok: false, reason: 'malformed delegation' });
    expect(decodeDelegation('not base64!')).toEqual({ ok: false, reason: 'malformed delegation' });
    expect(decodeDelegation(Buffer.from('[1,2]').toString('base64url'))).toEqual({ ok: false, reason: 'malformed delegation' });
  });
});
