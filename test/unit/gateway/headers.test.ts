import { describe, expect, it } from 'vitest';
import { clientResponseHeaders, makeTrustCheck, upstreamRequestHeaders } from '../../../gateway/headers.js';

const ctx = { clientIp: '192.0.2.1', proto: 'http', host: 'app.test', authority: 'app.test', trusted: false, mintId: () => 'minted' };
const toObject = (flat: string[]) => {
  const out: Record<string, string[]> = {};
  for (let i = 0; i < flat.length; i += 2) (out[(flat[i] as string).toLowerCase()] ??= []).push(flat[i + 1] as string);
  return out;
};

describe('upstream request headers', () => {
  it('drops hop-by-hop and Connection-listed headers, keeps end-to-end ones', () => {
    const raw = [
      'Host',
      'app.test',
      'Connection',
      'close, X-Hop',
      'X-Hop',
      '1',
      'TE',
      'trailers',
      'Upgrade',
      'h2c',
      'Accept',
      '*/*',
      'Expect',
      '100-continue',
    ];
    const h = toObject(upstreamRequestHeaders(raw, ctx).headers);
    expect(h['x-hop'] ?? h.connection ?? h.te ?? h.upgrade ?? h.expect).toBeUndefined();
    expect(h.accept).toEqual(['*/*']);
    expect(h.host).toEqual(['app.test']);
  });

  it('replaces forwarding headers from an untrusted client and appends to a trusted proxy’s', () => {
    const raw = ['X-Forwarded-For', '6.6.6.6', 'Forwarded', 'for=6.6.6.6', 'X-Forwarded-Proto', 'https'];
    const untrusted = toObject(upstreamRequestHeaders(raw, ctx).headers);
    expect(untrusted['x-forwarded-for']).toEqual(['192.0.2.1']);
    expect(untrusted['x-forwarded-proto']).toEqual(['http']);
    expect(untrusted.forwarded).toEqual(['for=192.0.2.1;proto=http;host="app.test"']);
    const trusted = toObject(upstreamRequestHeaders(raw, { ...ctx, trusted: true }).headers);
    expect(trusted['x-forwarded-for']).toEqual(['6.6.6.6, 192.0.2.1']);
    expect(trusted['x-forwarded-proto']).toEqual(['https']);
    expect(trusted.forwarded).toEqual(['for=6.6.6.6, for=192.0.2.1;proto=http;host="app.test"']);
  });

  it('quotes IPv6 in Forwarded, keeps a valid request id and mints one for an invalid id', () => {
    const v6 = toObject(upstreamRequestHeaders(['X-Request-Id', 'abc-123'], { ...ctx, clientIp: '::1' }).headers);
    expect(v6.forwarded).toEqual(['for="[::1]";proto=http;host="app.test"']);
    expect(v6['x-request-id']).toEqual(['abc-123']);
    const bad = upstreamRequestHeaders(['X-Request-Id', 'has spaces\tand tabs'], ctx);
    expect(bad.requestId).toBe('minted');
  });

  it('sends exactly one Host, the validated authority, and drops pseudo-headers', () => {
    const h = toObject(
      upstreamRequestHeaders([':method', 'GET', ':authority', 'app.test:8443', ':path', '/'], { ...ctx, authority: 'app.test:8443' })
        .headers,
    );
    expect(h.host).toEqual(['app.test:8443']);
    expect(Object.keys(h).some((k) => k.startsWith(':'))).toBe(false);
    // A client Host that validation did not route by never reaches the replica.
    const absolute = toObject(upstreamRequestHeaders(['Host', 'other.test'], ctx).headers);
    expect(absolute.host).toEqual(['app.test']);
  });

  it('keeps Upgrade and Connection for WebSocket handshakes only', () => {
    const raw = ['Connection', 'Upgrade', 'Upgrade', 'websocket'];
    expect(toObject(upstreamRequestHeaders(raw, { ...ctx, upgrade: true }).headers).upgrade).toEqual(['websocket']);
    expect(toObject(upstreamRequestHeaders(raw, ctx).headers).upgrade).toBeUndefined();
  });
});

describe('client response headers', () => {
  it('strips hop-by-hop headers, adds the request id and Connection: close while draining', () => {
    const out = clientResponseHeaders(
      {
        'content-type': 'text/plain',
        connection: 'keep-alive, x-internal',
        'x-internal': '1',
        'transfer-encoding': 'chunked',
        'set-cookie': ['a=1', 'b=2'],
      },
      'rid',
      true,
    );
    expect(out).toEqual({ 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'], 'x-request-id': 'rid', connection: 'close' });
  });
});

describe('trusted proxy check', () => {
  it('matches exact addresses, IPv4 CIDRs and IPv4-mapped IPv6', () => {
    const trusted = makeTrustCheck(['10.0.0.0/8', '::1', '192.168.1.7']);
    expect(trusted('10.200.3.4')).toBe(true);
    expect(trusted('::ffff:10.1.1.1')).toBe(true);
    expect(trusted('11.0.0.1')).toBe(false);
    expect(trusted('::1')).toBe(true);
    expect(trusted('192.168.1.7')).toBe(true);
    expect(trusted('192.168.1.8')).toBe(false);
    expect(makeTrustCheck([])('127.0.0.1')).toBe(false);
    expect(() => makeTrustCheck(['10.0.0.0/40'])).toThrow(/invalid trusted proxy/);
  });
});
