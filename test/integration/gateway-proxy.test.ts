/**
 * Gateway proxy semantics with real clients against real upstream processes: streaming with
 * backpressure, bodies, 100-continue, trailers, headers, PROXY protocol, WebSocket, HTTP/2.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  type Cluster,
  type GatewayProcess,
  startCluster,
  startUpstream,
  stopUpstreams,
  type Upstream,
} from '../helpers/gateway-fixture.js';
import { rawRequest, statusOf } from '../helpers/raw.js';
import { waitFor } from '../helpers/tmp.js';

const run = promisify(execFile);

function rssOf(pid: number): Promise<number> {
  return run('ps', ['-o', 'rss=', '-p', String(pid)]).then((r) => Number(r.stdout.trim()) * 1024);
}

describe('gateway proxy semantics', () => {
  let cluster: Cluster;
  let ups: Upstream[];
  let gw: GatewayProcess;
  const host = 'app.test';

  beforeAll(async () => {
    cluster = await startCluster();
    ups = await Promise.all([startUpstream('a'), startUpstream('b')]);
    await cluster.addApp('app', ups);
    gw = await cluster.startGateway();
  }, 60_000);

  afterAll(async () => {
    await cluster?.cleanup();
    stopUpstreams(ups ?? []);
  });

  it('streams 1 GiB down and 1 GiB up through the gateway in constant memory', async () => {
    const GiB = 1024 ** 3;
    const pid = gw.child.pid as number;
    const before = await rssOf(pid);
    let peak = before;
    const sampler = setInterval(() => void rssOf(pid).then((r) => (peak = Math.max(peak, r))), 100);
    try {
      const down = await request(`${gw.http}/bytes?n=${GiB}`, { headers: { host } });
      expect(down.statusCode).toBe(200);
      let received = 0;
      for await (const chunk of down.body) received += (chunk as Buffer).length;
      expect(received).toBe(GiB);

      const chunk = Buffer.alloc(1024 * 1024, 98);
      async function* body() {
        for (let i = 0; i < 1024; i++) yield chunk;
      }
      const up = await request(`${gw.http}/sink`, { method: 'POST', headers: { host }, body: Readable.from(body()) });
      expect(up.statusCode).toBe(200);
      expect((await up.body.json()) as { bytes: number }).toMatchObject({ bytes: GiB });
    } finally {
      clearInterval(sampler);
    }
    // Two gibibytes went through; the gateway's memory grew by a small, bounded amount.
    expect(peak - before).toBeLessThan(96 * 1024 * 1024);
  }, 120_000);

  it('passes chunked and content-length bodies, and answers 100-continue itself', async () => {
    const file = join(cluster.dir, 'payload.bin');
    writeFileSync(file, Buffer.alloc(300_000, 7));
    const cl = await run('curl', ['-s', '-H', `Host: ${host}`, '--data-binary', `@${file}`, `${gw.http}/sink`]);
    expect(JSON.parse(cl.stdout)).toMatchObject({ bytes: 300_000, te: null });
    const chunked = await run('curl', [
      '-s',
      '-H',
      `Host: ${host}`,
      '-H',
      'Transfer-Encoding: chunked',
      '--data-binary',
      `@${file}`,
      `${gw.http}/sink`,
    ]);
    expect(JSON.parse(chunked.stdout)).toMatchObject({ bytes: 300_000, te: 'chunked' });
    // curl sends Expect: 100-continue for large bodies and waits for the interim response.
    const cont = await run('curl', [
      '-sv',
      '-H',
      `Host: ${host}`,
      '-H',
      'Expect: 100-continue',
      '--data-binary',
      `@${file}`,
      `${gw.http}/sink`,
    ]);
    expect(cont.stderr).toMatch(/HTTP\/1\.1 100 Continue/);
    // The expectation was met by the gateway, so it is not repeated to the replica.
    expect(JSON.parse(cont.stdout)).toMatchObject({ bytes: 300_000, expect: null });
  });

  it('keeps a client connection usable after the replica answers before reading the body', async () => {
    // The replica answers 413 without reading a 1 MiB body: the rest must not sit in front of the
    // client's next request on the same connection (that request used to wait forever).
    const one = new Agent({ connections: 1 });
    try {
      for (let i = 0; i < 5; i++) {
        const early = await request(`${gw.http}/status?code=413`, {
          method: 'PUT',
          headers: { host },
          body: Buffer.alloc(1024 * 1024 + 1),
          dispatcher: one,
        });
        await early.body.dump();
        expect(early.statusCode).toBe(413);
        const next = await request(`${gw.http}/`, { method: 'PUT', headers: { host }, body: 'x', dispatcher: one, headersTimeout: 5_000 });
        await next.body.dump();
        expect(next.statusCode).toBe(200);
      }
    } finally {
      await one.close();
    }
  });

  it('forwards response trailers', async () => {
    const res = await request(`${gw.http}/trailers`, { headers: { host } });
    expect(await res.body.text()).toBe('part one;part two');
    expect(res.trailers).toMatchObject({ 'x-checksum': 'abc123' });
  });

  it('removes hop-by-hop headers, sets forwarding headers and keeps or mints x-request-id', async () => {
    // curl, because undici refuses to send Connection-listed and Keep-Alive headers itself.
    const res = await run('curl', [
      '-s',
      '-D',
      '-',
      ...[
        'Connection: keep-alive, x-secret-hop',
        'x-secret-hop: 1',
        'Keep-Alive: timeout=5',
        'X-Forwarded-For: 6.6.6.6',
        'Forwarded: for=6.6.6.6',
        'X-Request-Id: client-id-1',
        `Host: ${host}`,
      ].flatMap((h) => ['-H', h]),
      `${gw.http}/headers`,
    ]);
    const [head, json] = res.stdout.split('\r\n\r\n') as [string, string];
    const { headers } = JSON.parse(json) as { headers: Record<string, string> };
    expect(headers['x-secret-hop']).toBeUndefined();
    expect(headers['keep-alive']).toBeUndefined();
    // An untrusted client cannot choose the address the replica sees.
    expect(headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(headers['x-forwarded-proto']).toBe('http');
    expect(headers['x-forwarded-host']).toBe(host);
    expect(headers.forwarded).toBe(`for=127.0.0.1;proto=http;host="${host}"`);
    expect(headers['x-request-id']).toBe('client-id-1');
    expect(head.toLowerCase()).toContain('x-request-id: client-id-1');

    const minted = await request(`${gw.http}/headers`, { headers: { host } });
    const body = (await minted.body.json()) as { headers: Record<string, string> };
    expect(body.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(minted.headers['x-request-id']).toBe(body.headers['x-request-id']);
  });

  it('keeps forwarding headers from a trusted proxy and appends the peer', async () => {
    const trusting = await cluster.startGateway(['--trust-proxy', '127.0.0.1']);
    const res = await request(`${trusting.http}/headers`, {
      headers: { host, 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', forwarded: 'for=203.0.113.7' },
    });
    const { headers } = (await res.body.json()) as { headers: Record<string, string> };
    expect(headers['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
    expect(headers['x-forwarded-proto']).toBe('https');
    expect(headers.forwarded).toBe(`for=203.0.113.7, for=127.0.0.1;proto=http;host="${host}"`);
    await trusting.stop();
  });

  it('accepts PROXY protocol v1 and v2 on a listener configured for it, and refuses connections without it', async () => {
    const pp = await cluster.startGateway(['--proxy-protocol']);
    const port = Number(new URL(pp.http).port);
    const v1 = await run('curl', ['-s', '--haproxy-protocol', '-H', `Host: ${host}`, `${pp.http}/headers`]);
    // curl announces its own source address; what matters is that the header was parsed, not refused.
    expect(JSON.parse(v1.stdout).headers['x-forwarded-for']).toBe('127.0.0.1');

    const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
    const addr = Buffer.from([198, 51, 100, 9, 127, 0, 0, 1, 0x30, 0x39, 0x1f, 0x90]);
    const v2 = Buffer.concat([
      sig,
      Buffer.from([0x21, 0x11, 0x00, addr.length]),
      addr,
      Buffer.from(`GET /headers HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
    ]);
    const r2 = await rawRequest(port, v2);
    expect(statusOf(r2.text)).toBe(200);
    expect(r2.text).toContain('"x-forwarded-for":"198.51.100.9"');

    const textV1 = await rawRequest(
      port,
      `PROXY TCP4 192.0.2.44 127.0.0.1 5555 80\r\nGET /headers HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
    );
    expect(textV1.text).toContain('"x-forwarded-for":"192.0.2.44"');

    const without = await rawRequest(port, `GET /headers HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    expect(without.closed).toBe(true);
    expect(without.text).toBe('');
    await pp.stop();
  });

  it('proxies WebSocket upgrades, and an open WebSocket survives 10 route and replica updates', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${new URL(gw.http).port}/chat`, { headers: { host } });
    const messages: string[] = [];
    ws.on('message', (d) => messages.push(d.toString()));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    await waitFor(() => messages.length >= 1, { what: 'hello from the replica' });
    expect(JSON.parse(messages[0] as string)).toMatchObject({ forwardedFor: '127.0.0.1' });
    const extra = await startUpstream('c');
    try {
      for (let i = 0; i < 10; i++) {
        // Alternate the replica set and the route's policy: both rebuild the gateway's routing state.
        await cluster.setReplicas('app', i % 2 === 0 ? [...ups, extra] : ups);
        await cluster.addApp('app', i % 2 === 0 ? [...ups, extra] : ups, { retries: i % 3 });
        ws.send(`m${i}`);
        await waitFor(() => messages.includes(`echo:m${i}`), { what: `echo of m${i}` });
      }
      expect(ws.readyState).toBe(WebSocket.OPEN);
    } finally {
      ws.close();
      stopUpstreams([extra]);
      await cluster.setReplicas('app', ups);
    }
  });

  it('answers 404 to a WebSocket for an unknown host', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${new URL(gw.http).port}/`, { headers: { host: 'nobody.test' } });
    const status = await new Promise<number>((resolve) => ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
    expect(status).toBe(404);
  });

  it('serves HTTP/2 with prior knowledge (h2c) to curl and h2load', async () => {
    const r = await run('curl', [
      '-s',
      '--http2-prior-knowledge',
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      '-H',
      `Host: ${host}`,
      `${gw.http}/`,
    ]);
    expect(r.stdout).toBe('2 200');
    // h2 carries the host in :authority; the replica must see it as Host.
    const h = await run('curl', ['-s', '--http2-prior-knowledge', '-H', `Host: ${host}`, `${gw.http}/headers`]);
    expect(JSON.parse(h.stdout).headers.host).toBe(host);
    const load = await run('h2load', ['-n', '200', '-c', '4', '-m', '8', '-H', `:authority: ${host}`, `${gw.http}/`]);
    expect(load.stdout).toMatch(/200 succeeded, 0 failed/);
    // A Host header that contradicts :authority is malformed (RFC 9113 §8.3.1).
    const conflicting = await run('h2load', ['-n', '4', '-c', '1', '-H', 'host: other.test', '-H', `:authority: ${host}`, `${gw.http}/`]);
    expect(conflicting.stdout).toMatch(/status codes: 0 2xx, 0 3xx, 4 4xx/);
    // HTTP/1.1 still works on the same port.
    const h1 = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', '-H', `Host: ${host}`, `${gw.http}/`]);
    expect(h1.stdout).toBe('1.1 200');
  });

  it('serves HTTP/2 and HTTP/1.1 over TLS chosen by ALPN', async () => {
    const key = join(cluster.dir, 'tls.key');
    const cert = join(cluster.dir, 'tls.crt');
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=app.test',
      '-addext',
      'subjectAltName=DNS:app.test',
    ]);
    const tls = await cluster.startGateway(['--tls-cert', cert, '--tls-key', key]);
    const port = new URL(tls.https as string).port;
    const h2 = await run('curl', [
      '-s',
      '--cacert',
      cert,
      '--resolve',
      `app.test:${port}:127.0.0.1`,
      '-w',
      ' %{http_version}',
      `https://app.test:${port}/headers`,
    ]);
    const [json, version] = [h2.stdout.slice(0, h2.stdout.lastIndexOf(' ')), h2.stdout.slice(h2.stdout.lastIndexOf(' ') + 1)];
    expect(version).toBe('2');
    expect(JSON.parse(json).headers['x-forwarded-proto']).toBe('https');
    const h1 = await run('curl', [
      '-s',
      '--http1.1',
      '--cacert',
      cert,
      '--resolve',
      `app.test:${port}:127.0.0.1`,
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      `https://app.test:${port}/`,
    ]);
    expect(h1.stdout).toBe('1.1 200');
    await tls.stop();
  });
});
