import { describe, expect, it } from 'vitest';
import { parseTtl, sessionKey } from '../../../cli/ui-command.js';
import { decodeDelegation, delegate, encodeDelegation } from '../../../protocol/delegation.js';
import { generateKeyPair, signBytes, verifyBytes } from '../../../protocol/signing.js';

describe('allegra ui', () => {
  it('takes a sign-in life from 1 minute to 12 hours, 1 hour by default', () => {
    expect(parseTtl(undefined)).toBe(3_600_000);
    expect(parseTtl('30m')).toBe(1_800_000);
    expect(parseTtl('12h')).toBe(43_200_000);
    for (const bad of ['13h', '30s', '0m', 'forever', '1d', '-5m']) expect(() => parseTtl(bad)).toThrow(/--ttl expects/);
  });

  it('makes a session key whose seed is the one the browser signs with, and a delegation to it that verifies', () => {
    const session = sessionKey();
    expect(session.seedHex).toMatch(/^[0-9a-f]{64}$/);
    const signature = signBytes({ privateKey: session.privateKey, publicKeyHex: session.publicKeyHex }, 'hello');
    expect(verifyBytes(session.publicKeyHex, 'hello', signature)).toBe(true);
    expect(sessionKey().seedHex).not.toBe(session.seedHex);
    const owner = generateKeyPair();
    const d = decodeDelegation(encodeDelegation(delegate(owner, session.publicKeyHex, parseTtl('5m'))));
    expect(d).toMatchObject({ ok: true, delegation: { owner: owner.publicKeyHex, session: session.publicKeyHex } });
  });
});
