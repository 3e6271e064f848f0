/**
 * The gateway's active health checks against real servers: an HTTP/2-only replica (h2c, as a gRPC server is)
 * stays in rotation; one that answers 5xx over HTTP/2, or where nothing listens, is taken out.
 */
import { createServer, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { ActiveHealthChecker } from '../../../gateway/health.js';
import { freePort } from '../../../quorum-agent/ports.js';
import { sleep } from '../../helpers/tmp.js';

describe('gateway active health checks', () => {
  const servers: Http2Server[] = [];
  const h2 = async (status: number) => {
    const s = createServer((_req, res) => res.writeHead(status).end());
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  };
  afterAll(async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  it('keeps an h2c-only replica in rotation and takes out a failing one and one where nothing listens', async () => {
    const changes: Array<[string, boolean]> = [];
    const checker = new ActiveHealthChecker({
      intervalMs: 20,
      timeoutMs: 500,
      path: '/',
      unhealthyThreshold: 2,
      healthyThreshold: 1,
      onChange: (endpoint, down) => changes.push([endpoint, down]),
    });
    const [good, bad] = [await h2(200), await h2(503)];
    const gone = `http://127.0.0.1:${await freePort()}`;
    try {
      for (const e of [good, bad, gone]) checker.add(e);
      const deadline = Date.now() + 5_000;
      while (!(checker.isDown(bad) && checker.isDown(gone)) && Date.now() < deadline) await sleep(20);
      await sleep(200); // several more probes of the good one
      expect(checker.isDown(bad)).toBe(true);
      expect(checker.isDown(gone)).toBe(true);
      expect(checker.isDown(good)).toBe(false);
      expect(changes.filter(([e]) => e === good)).toEqual([]);
    } finally {
      await checker.close();
    }
  });
});
