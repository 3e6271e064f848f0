import { describe, expect, it } from 'vitest';
import {
  envelopeOf,
  generateKeyPair,
  keyPairFromPem,
  privateKeyToPem,
  RequestVerifier,
  SIGNATURE_HEADERS,
  sha256Hex,
  signRequest,
  verifyEnvelope,
} from '../../../protocol/signing.js';

const body = JSON.stringify({ name: 'demo', cmd: 'node server.js' });
const NODE = 'n-target';

function signed(opts: { now?: number; path?: string; headers?: Record<string, string>; audience?: string } = {}) {
  const keyPair = generateKeyPair();
  const headers = signRequest(keyPair, {
    method: 'PUT',
    path: opts.path ?? '/v1/instances/demo/code?wait=1',
    audience: opts.audience ?? NODE,
    body,
    headers: { 'content-type': 'application/json', 'x-allegra-cmd': 'node%20server.js', ...opts.headers },
    now: opts.now,
  });
  return { keyPair, headers };
}

const verifier = (opts: { now?: number } = {}) =>
  new RequestVerifier({ audience: NODE, clock: opts.now ? () => opts.now as number : undefined, notBefore: 0 });

const verify = (v: RequestVerifier, headers: Record<string, string>, method = 'PUT', path = '/v1/instances/demo/code?wait=1') =>
  v.verify({ method, path, headers });

describe('request signing (V2)', () => {
  it('accepts a correctly signed request, names the signer and the signed body hash', () => {
    const { keyPair, headers } = signed();
    const result = verify(verifier(), headers);
    expect(result).toMatchObject({ ok: true, publicKey: keyPair.publicKeyHex, bodySha256: sha256Hex(body) });
  });

  it('covers method, path, query, audience, every x-allegra header, content type and body hash', () => {
    const tamper: Array<[string, (h: Record<string, string>) => Record<string, string>, string?, string?]> = [
      ['method', (h) => h, 'POST'],
      ['path', (h) => h, 'PUT', '/v1/instances/other/code?wait=1'],
      ['query', (h) => h, 'PUT', '/v1/instances/demo/code?wait=0'],
      ['command', (h) => ({ ...h, 'x-allegra-cmd': 'id%3B%20cat%20node.json' })],
      ['added x-allegra header', (h) => ({ ...h, 'x-allegra-env': 'EVIL=1' })],
      ['content type', (h) => ({ ...h, 'content-type': 'text/plain' })],
      ['body hash', (h) => ({ ...h, [SIGNATURE_HEADERS.contentSha256]: sha256Hex('other body') })],
    ];
    for (const [what, change, method, path] of tamper) {
      const { headers } = signed();
      const result = verify(verifier(), change(headers), method, path);
      expect(result, what).toMatchObject({ ok: false, reason: 'bad signature' });
    }
  });

  it('is useless at any other agent: the audience is signed and checked', () => {
    const { headers } = signed();
    const other = new RequestVerifier({ audience: 'n-other', notBefore: 0 });
    expect(verify(other, headers)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/addressed to node n-target, this is node n-other/),
    });
    // Rewriting the audience header breaks the signature.
    expect(verify(other, { ...headers, [SIGNATURE_HEADERS.audience]: 'n-other' })).toMatchObject({ ok: false, reason: 'bad signature' });
  });

  it('refuses a replayed request (same nonce twice)', () => {
    const { headers } = signed();
    const v = verifier();
    expect(verify(v, headers).ok).toBe(true);
    expect(verify(v, headers)).toMatchObject({ ok: false, reason: expect.stringMatching(/replay/) });
  });

  it('refuses stale and future timestamps, and requests signed before the verifier existed', () => {
    const now = 1_700_000_000_000;
    const v = verifier({ now });
    expect(verify(v, signed({ now: now - 31_000 }).headers)).toMatchObject({ ok: false, reason: expect.stringMatching(/stale/) });
    expect(verify(v, signed({ now: now + 31_000 }).headers)).toMatchObject({ ok: false, reason: expect.stringMatching(/stale/) });
    expect(verify(v, signed({ now: now - 29_000 }).headers).ok).toBe(true);
    // A restarted agent has forgotten the nonces it saw: it refuses what was signed before it started.
    const restarted = new RequestVerifier({ audience: NODE, clock: () => now, notBefore: now - 1_000 });
    expect(verify(restarted, signed({ now: now - 5_000 }).headers)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/before this agent started/),
    });
  });

  it('refuses unsigned and malformed requests', () => {
    const v = verifier();
    expect(v.verify({ method: 'GET', path: '/', headers: {} })).toMatchObject({ ok: false, reason: 'request is not signed' });
    const { headers } = signed();
    expect(verify(v, { ...headers, [SIGNATURE_HEADERS.key]: 'zz' })).toMatchObject({ ok: false });
    expect(verify(v, { ...headers, [SIGNATURE_HEADERS.timestamp]: 'soon' })).toMatchObject({ ok: false });
    expect(verify(v, { ...headers, [SIGNATURE_HEADERS.nonce]: 'x' })).toMatchObject({ ok: false, reason: 'malformed nonce' });
  });

  it('keeps a signed request as an envelope anyone can check later, without clocks or nonce caches', () => {
    const { keyPair, headers } = signed();
    const envelope = envelopeOf('PUT', '/v1/instances/demo/code?wait=1', { ...headers, 'user-agent': 'not signed, not kept' });
    expect(envelope.headers['user-agent']).toBeUndefined();
    expect(verifyEnvelope(envelope)).toMatchObject({ ok: true, publicKey: keyPair.publicKeyHex });
    expect(verifyEnvelope(envelope)).toMatchObject({ ok: true }); // no replay check for stored records
    const altered = { ...envelope, headers: { ...envelope.headers, 'x-allegra-cmd': 'rm' } };
    expect(verifyEnvelope(altered)).toMatchObject({ ok: false, reason: 'bad signature' });
  });

  it('round-trips keys through PEM with the same public identity', () => {
    const kp = generateKeyPair();
    const again = keyPairFromPem(privateKeyToPem(kp));
    expect(again.publicKeyHex).toBe(kp.publicKeyHex);
    expect(kp.publicKeyHex).toMatch(/^[0-9a-f]{64}$/);
  });
});
