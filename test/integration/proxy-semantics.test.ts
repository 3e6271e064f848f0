/**
 * The proxy's semantics, the same suite against both entries of the one engine: the Node gateway (a real
 * `allegra gateway` process) and the Workers edge (the Worker in workerd through Miniflare, its routes fed
 * from the registry by the bridge, forwarding to that Node gateway). Both are fed from one registry seeded
 * with signed records (registry/seed.ts) and reach real replica processes. Through the edge, every
 * assertion holds end to end: what the client and the replica see is the same as without it.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EdgeDev, startEdgeDev } from '../../edge/dev.js';
import { keys } from '../../protocol/keys.js';
import {
  type Cluster,
  type GatewayProcess,
  startCluster,
  startUpstream,
  stopUpstreams,
  type Upstream,
} from '../helpers/gateway-fixture.js';
import { sleep, waitFor } from '../helpers/tmp.js';

type Entry = 'node gateway' | 'Workers edge';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

describe.each<Entry>(['node gateway', 'Workers edge'])('proxy semantics through the %s', (entry) => {
  let cluster: Cluster;
  const ups: Upstream[] = [];
  let gw: GatewayProcess;
  let edge: EdgeDev | null = null;
  let base = '';
  const log = pino({ level: 'warn' });

  const send = async (
    host: string,
    path = '/',
    init: { method?: string; headers?: Record<string, string>; body?: string } = {},
  ): Promise<Answer> => {
    const res = await request(`${base}${path}`, {
      method: (init.method ?? 'GET') as 'GET',
      headers: { host, ...init.headers },
      ...(init.body !== undefined ? { body: init.body } : {}),
      headersTimeout: 10_000,
    });
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
  };
  const upstream = async (name: string) => {
    const u = await startUpstream(name);
    ups.push(u);
    return u;
  };

  beforeAll(async () => {
    cluster = await startCluster();
    const [a1, a2, s1, s2, s3, f1, dead1, dead2, slow] = await Promise.all(
      ['a1', 'a2', 's1', 's2', 's3', 'f1', 'dead1', 'dead2', 'slow'].map((n) => upstream(n)),
    );
    // Replicas the registry still lists but whose processes are gone: connections to them are refused.
    for (const u of [dead1, dead2]) {
      u?.kill('SIGKILL');
      await new Promise((r) => u?.child.once('exit', r));
    }
    await cluster.addApp('alpha', [a1, a2] as Upstream[]);
    await cluster.addApp('sticky', [s1, s2, s3] as Upstream[], { sticky: { cookie: 'sid' } });
    await cluster.addApp('minted', [s1, s2, s3] as Upstream[], { sticky: { cookie: 'mid', insert: true } });
    await cluster.addApp('flaky', [f1, dead1] as Upstream[]);
    await cluster.addApp('gone', [dead1, dead2] as Upstream[]);
    await cluster.addApp('slow', [slow] as Upstream[], { timeoutMs: 1_000 });
    await cluster.addApp('vacant', [a1] as Upstream[]);
    await cluster.setReplicas('vacant', []);
    const edgeToken = randomBytes(24).toString('base64url');
    const tokenFile = join(cluster.dir, 'edge.token');
    writeFileSync(tokenFile, edgeToken, { mode: 0o600 });
    gw = await cluster.startGateway([], { healthCheck: false, edgeTokenFile: tokenFile });
    base = gw.http;
    if (entry === 'Workers edge') {
      edge = await startEdgeDev({ registry: cluster.registry, origins: [gw.http], edgeToken, log });
      base = edge.url;
    }
    await waitFor(async () => (await send('alpha.test')).status === 200, { what: 'route to alpha', timeoutMs: 15_000 });
  }, 60_000);

  afterAll(async () => {
    await edge?.stop();
    await cluster?.cleanup();
    stopUpstreams(ups);
  });

  it('forwards the request with forwarding headers and x-request-id, without hop-by-hop headers', async () => {
    const res = await send('alpha.test', '/headers', {
      headers: { 'x-request-id': 'req-semantics-1', 'proxy-authorization': 'secret', te: 'trailers' },
    });
    expect(res.status).toBe(200);
    expect(res.headers['x-request-id']).toBe('req-semantics-1');
    const seen = (JSON.parse(res.text) as { headers: Record<string, string> }).headers;
    expect(seen.host).toBe('alpha.test');
    expect(seen['x-request-id']).toBe('req-semantics-1');
    expect(seen['x-forwarded-for']).toContain('127.0.0.1');
    expect(seen['x-forwarded-host']).toBe('alpha.test');
    expect(seen['x-forwarded-proto']).toBe('http');
    expect(seen.forwarded).toContain('host="alpha.test"');
    for (const hidden of ['proxy-authorization', 'te', 'x-allegra-edge']) expect(seen[hidden]).toBeUndefined();
    // A request without an id gets one, the same on both sides.
    const minted = await send('alpha.test', '/headers');
    const mintedSeen = (JSON.parse(minted.text) as { headers: Record<string, string> }).headers;
    expect(minted.headers['x-request-id']).toMatch(/^[A-Za-z0-9._:-]{8,}$/);
    expect(mintedSeen['x-request-id']).toBe(minted.headers['x-request-id']);
  });

  it('answers 404 for an unknown host, with x-request-id and a one-line reason', async () => {
    const res = await send('nowhere.test', '/', { headers: { 'x-request-id': 'req-404' } });
    expect(res.status).toBe(404);
    expect(res.headers['x-request-id']).toBe('req-404');
    expect(res.text).toBe('no route for host nowhere.test\n');
  });

  it('answers 503 with Retry-After when the route has no replica', async () => {
    const res = await send('vacant.test');
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
    expect(res.headers['x-request-id']).toBeTruthy();
    expect(res.text).toMatch(/^no healthy replica for vacant\.test: .+\n$/);
  });

  it('answers 502 when every replica fails', async () => {
    const res = await send('gone.test');
    expect(res.status).toBe(502);
    expect(res.headers['x-request-id']).toBeTruthy();
    expect(res.text).toMatch(/^bad gateway: the replicas of gone\.test failed \(ECONNREFUSED\)\n$/);
  });

  it('answers 504 when the replica does not answer within the route deadline', async () => {
    const t0 = performance.now();
    const res = await send('slow.test', '/slow?ms=5000');
    expect(res.status).toBe(504);
    expect(res.headers['x-request-id']).toBeTruthy();
    expect(res.text).toMatch(/^upstream timeout: slow\.test did not answer within 1000 ms\n$/);
    expect(performance.now() - t0).toBeLessThan(4_000);
  });

  it('retries idempotent requests on another replica, but not a POST the replica received', async () => {
    const statuses = await Promise.all(Array.from({ length: 20 }, () => send('flaky.test').then((r) => r.status)));
    expect(statuses).toEqual(Array(20).fill(200));
    const [f1] = ups.filter((u) => u.name === 'f1');
    const before =
      (JSON.parse((await send('flaky.test', '/count')).text) as { counts: Record<string, number> }).counts['/reset-after-body'] ?? 0;
    const post = await send('flaky.test', '/reset-after-body', { method: 'POST', body: 'not twice' });
    expect(post.status).toBe(502);
    const after =
      (JSON.parse((await send('flaky.test', '/count')).text) as { counts: Record<string, number> }).counts['/reset-after-body'] ?? 0;
    expect(f1).toBeDefined();
    expect(after - before).toBe(1);
  });

  it('keeps a session on one replica with the route’s sticky cookie, and spreads sessions', async () => {
    const nameOf = async (sid: string) =>
      (JSON.parse((await send('sticky.test', '/', { headers: { cookie: `sid=${sid}` } })).text) as { name: string }).name;
    const first = await nameOf('session-a');
    for (let i = 0; i < 8; i++) expect(await nameOf('session-a')).toBe(first);
    const names = new Set(await Promise.all(Array.from({ length: 12 }, (_, i) => nameOf(`session-${i}`))));
    expect(names.size).toBeGreaterThan(1);
  });

  it('gives a client without a session cookie one that keeps it on the replica that answered', async () => {
    const visit = async () => {
      const res = await send('minted.test');
      const set = ([] as string[]).concat(res.headers['set-cookie'] ?? []);
      // Exactly one session cookie (an edge in front must not mint a second one that disagrees).
      expect(set.filter((c) => c.startsWith('mid='))).toHaveLength(1);
      const cookie = (set[0] as string).split(';')[0] as string;
      return { cookie, name: (JSON.parse(res.text) as { name: string }).name };
    };
    const firsts = await Promise.all(Array.from({ length: 12 }, visit));
    for (const { cookie, name } of firsts.slice(0, 4)) {
      for (let i = 0; i < 4; i++) {
        const again = await send('minted.test', '/', { headers: { cookie } });
        expect(again.headers['set-cookie']).toBeUndefined();
        expect((JSON.parse(again.text) as { name: string }).name).toBe(name);
      }
    }
    expect(new Set(firsts.map((f) => f.name)).size).toBeGreaterThan(1);
  });

  it('serves a route added to the registry within 5 s, and stops serving it within 5 s of its removal', async () => {
    // By name: `ups` is in the order the upstreams came up, and two of them were killed on purpose.
    const a1 = ups.find((u) => u.name === 'a1');
    expect(a1?.child.exitCode).toBeNull();
    const t0 = performance.now();
    await cluster.addApp('late', [a1 as Upstream]);
    await waitFor(async () => (await send('late.test')).status === 200, { timeoutMs: 5_000, intervalMs: 25, what: 'new route served' });
    const added = performance.now() - t0;
    const t1 = performance.now();
    await cluster.registry.delete(keys.route('late.test'));
    await waitFor(async () => (await send('late.test')).status === 404, { timeoutMs: 5_000, intervalMs: 25, what: 'removed route gone' });
    const removed = performance.now() - t1;
    expect(added).toBeLessThan(5_000);
    expect(removed).toBeLessThan(5_000);
    await sleep(0);
  });
});
