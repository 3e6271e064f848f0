/**
 * Limits and parser strictness: oversized headers and bodies, slow and idle clients, connection caps,
 * and a corpus of request-smuggling attempts that must be refused and never reach a replica.
 */

import { connect, type Socket } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SMUGGLING_CORPUS } from '../fixtures/smuggling/corpus.js';
import {
  type Cluster,
  type GatewayProcess,
  startCluster,
  startUpstream,
  stopUpstreams,
  type Upstream,
} from '../helpers/gateway-fixture.js';
import { rawRequest, statusOf } from '../helpers/raw.js';
import { sleep } from '../helpers/tmp.js';

describe('gateway limits and request smuggling', () => {
  let cluster: Cluster;
  let up: Upstream;
  let gw: GatewayProcess;
  let port: number;
  const host = 'lim.test';

  beforeAll(async () => {
    cluster = await startCluster();
    up = await startUpstream('lim');
    await cluster.addApp('lim', [up], { maxBodyBytes: 1000 });
    gw = await cluster.startGateway([], {
      headersTimeoutMs: 1_000,
      requestTimeoutMs: 2_000,
      idleTimeoutMs: 700,
      maxConnections: 8,
      maxHeaderBytes: 8192,
      healthCheck: false,
    });
    port = Number(new URL(gw.http).port);
  }, 60_000);

  afterAll(async () => {
    await cluster?.cleanup();
    stopUpstreams(up ? [up] : []);
  });

  const victimHits = async () => {
    const res = await request(`${up.url}/count`);
    const { counts } = (await res.body.json()) as { counts: Record<string, number> };
    return counts['/victim'] ?? 0;
  };

  for (const c of SMUGGLING_CORPUS) {
    it(`refuses: ${c.name}`, async () => {
      const res = await rawRequest(port, c.raw.replaceAll('HOST', host));
      // Refused by the parser: a 4xx and a closed connection, or just a closed connection.
      const status = statusOf(res.text);
      if (c.answered) expect(status).toBe(c.answered);
      else expect(status === 0 || (status >= 400 && status < 500)).toBe(true);
      expect(res.closed).toBe(true);
      expect(await victimHits()).toBe(0);
    });
  }

  it('the corpus shape is sound: a well-formed request to the same path is forwarded', async () => {
    const res = await rawRequest(port, `GET /victim HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    expect(statusOf(res.text)).toBe(404); // the upstream's own 404: it was reached
    expect(await victimHits()).toBe(1);
  });

  it('answers 431 to headers above the limit', async () => {
    const res = await rawRequest(port, `GET / HTTP/1.1\r\nHost: ${host}\r\nX-Big: ${'a'.repeat(10_000)}\r\n\r\n`);
    expect(statusOf(res.text)).toBe(431);
  });

  it("answers 413 to bodies above the route's limit, declared or chunked", async () => {
    const declared = await request(`${gw.http}/sink`, { method: 'POST', headers: { host }, body: 'x'.repeat(2_000) });
    expect(declared.statusCode).toBe(413);
    expect(await declared.body.text()).toMatch(/exceeds the limit of 1000/);
    const chunked = await rawRequest(
      port,
      `POST /sink HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n${'x'.repeat(2_000)}\r\n0\r\n\r\n`,
    );
    expect(statusOf(chunked.text)).toBe(413);
    const small = await request(`${gw.http}/sink`, { method: 'POST', headers: { host }, body: 'x'.repeat(900) });
    expect(await small.body.json()).toMatchObject({ bytes: 900 });
  });

  it('closes a slowloris connection that trickles its headers', async () => {
    const socket = connect(port, '127.0.0.1');
    let closedAt = 0;
    let response = '';
    socket.on('data', (d) => (response += d.toString()));
    socket.on('close', () => (closedAt = Date.now()));
    socket.on('error', () => {});
    const started = Date.now();
    socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n`);
    for (let i = 0; i < 20 && closedAt === 0; i++) {
      await sleep(200);
      if (!socket.destroyed) socket.write(`X-Slow-${i}: 1\r\n`);
    }
    expect(closedAt).toBeGreaterThan(0);
    expect(closedAt - started).toBeLessThan(3_500);
    expect(response === '' || statusOf(response) === 408).toBe(true);
  });

  it('closes idle keep-alive connections after the idle timeout', async () => {
    const socket = connect(port, '127.0.0.1');
    const closed = new Promise<number>((r) => socket.on('close', () => r(Date.now())));
    socket.on('error', () => {});
    socket.resume(); // read the response, or the close is never seen
    socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const t0 = Date.now();
    const at = await closed;
    expect(at - t0).toBeGreaterThanOrEqual(500);
    expect(at - t0).toBeLessThan(3_000);
  });

  it('caps concurrent connections', async () => {
    const sockets: Socket[] = [];
    try {
      for (let i = 0; i < 8; i++) {
        const s = connect(port, '127.0.0.1');
        s.on('error', () => {});
        await new Promise((r) => s.once('connect', r));
        sockets.push(s);
      }
      await sleep(100);
      const extra = await rawRequest(port, `GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`, { timeoutMs: 1_500 });
      expect(extra.closed).toBe(true);
      expect(extra.text).toBe('');
    } finally {
      for (const s of sockets) s.destroy();
    }
    await sleep(200);
    const after = await request(`${gw.http}/`, { headers: { host } });
    expect(after.statusCode).toBe(200);
    await after.body.dump();
  });
});
