import { describe, expect, it } from 'vitest';
import {
  generateKeyPair,
  keyPairFromPem,
  privateKeyToPem,
  RequestVerifier,
  SIGNATURE_HEADERS,
  signRequest,
} from '../../../protocol/signing.js';

const body = JSON.stringify({ name: 'demo', cmd: 'node server.js' });

function signed(now = Date.now(), keyPair = generateKeyPair()) {
  const headers = signRequest(keyPair, { method: 'POST', path: '/v1/instances', body, now });
  return { keyPair, headers };
}

describe('request signing', () => {
  it('accepts a correctly signed request and names the signer', () => {
    const { keyPair, headers } = signed();
    const result = new RequestVerifier().verify({ method: 'POST', path: '/v1/instances', body, headers });
    expect(result).toEqual({ ok: true, publicKey: keyPair.publicKeyHex });
  });

  it('refuses a tampered body, method or path', () => {
    const { headers } = signed();
    const v = new RequestVerifier();
    expect(v.verify({ method: 'POST', path: '/v1/instances', body: body.replace('demo', 'evil'), headers })).toMatchObject({
      ok: false,
      reason: 'bad signature',
    });
    expect(v.verify({ method: 'DELETE', path: '/v1/instances', body, headers })).toMatchObject({ ok: false, reason: 'bad signature' });
    expect(v.verify({ method: 'POST', path: '/v1/instances/other', body, headers })).toMatchObject({ ok: false, reason: 'bad signature' });
  });

  it('refuses a signature made with a different key than the one claimed', () => {
    const { headers } = signed();
    const other = generateKeyPair();
    const forged = { ...headers, [SIGNATURE_HEADERS.key]: other.publicKeyHex };
    expect(new RequestVerifier().verify({ method: 'POST', path: '/v1/instances', body, headers: forged })).toMatchObject({
      ok: false,
      reason: 'bad signature',
    });
  });

  it('refuses a replayed request (same nonce twice)', () => {
    const { headers } = signed();
    const v = new RequestVerifier();
    expect(v.verify({ method: 'POST', path: '/v1/instances', body, headers }).ok).toBe(true);
    expect(v.verify({ method: 'POST', path: '/v1/instances', body, headers })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/replay/),
    });
  });

  it('refuses stale and future timestamps beyond the allowed skew', () => {
    const now = 1_700_000_000_000;
    const v = new RequestVerifier({ maxSkewMs: 30_000, clock: () => now });
    const old = signed(now - 31_000).headers;
    const future = signed(now + 31_000).headers;
    const fresh = signed(now - 29_000).headers;
    expect(v.verify({ method: 'POST', path: '/v1/instances', body, headers: old })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/stale/),
    });
    expect(v.verify({ method: 'POST', path: '/v1/instances', body, headers: future })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/stale/),
    });
    expect(v.verify({ method: 'POST', path: '/v1/instances', body, headers: fresh }).ok).toBe(true);
  });

  it('refuses unsigned and malformed requests', () => {
    const v = new RequestVerifier();
    expect(v.verify({ method: 'GET', path: '/', body: '', headers: {} })).toMatchObject({ ok: false, reason: 'request is not signed' });
    const { headers } = signed();
    expect(v.verify({ method: 'POST', path: '/v1/instances', body, headers: { ...headers, [SIGNATURE_HEADERS.key]: 'zz' } })).toMatchObject(
      { ok: false },
    );
    expect(
      v.verify({ method: 'POST', path: '/v1/instances', body, headers: { ...headers, [SIGNATURE_HEADERS.timestamp]: 'soon' } }),
    ).toMatchObject({ ok: false });
  });

  it('round-trips keys through PEM with the same public identity', () => {
    const kp = generateKeyPair();
    const again = keyPairFromPem(privateKeyToPem(kp));
    expect(again.publicKeyHex).toBe(kp.publicKeyHex);
    expect(kp.publicKeyHex).toMatch(/^[0-9a-f]{64}$/);
  });
});
