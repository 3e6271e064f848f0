/**
 * What only the Workers edge does: `allegra edge dev` (the built CLI, a real process running workerd) fed
 * from a registry, retrying idempotent requests on another origin when one is down, never replaying a
 * request body, answering 501 to what Workers cannot carry; and wrangler.toml building the Worker.
 */
import { type ChildProcess, execFile, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';
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

/** A port nothing listens on: connections to it are refused. */
async function closedPort(): Promise<number> {
  const s: Server = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('the Workers edge', () => {
  let cluster: Cluster;
  let ups: Upstream[] = [];
  let gw: GatewayProcess;
  let edge: ChildProcess;
  let url = '';
  let deadOrigin = '';

  beforeAll(async () => {
    cluster = await startCluster();
    ups = await Promise.all([startUpstream('e1'), startUpstream('e2')]);
    await cluster.addApp('app', ups);
    const tokenFile = join(cluster.dir, 'edge.token');
    writeFileSync(tokenFile, randomBytes(24).toString('base64url'), { mode: 0o600 });
    gw = await cluster.startGateway([], { healthCheck: false, edgeTokenFile: tokenFile });
    deadOrigin = `http://127.0.0.1:${await closedPort()}`;
    const registryDir = join(cluster.dir, 'registry');
    edge = fork(
      CLI,
      [
        'edge',
        'dev',
        '--registry',
        `embedded:${registryDir}`,
        '--port',
        '0',
        '--origin',
        deadOrigin,
        '--origin',
        gw.http,
        '--edge-token-file',
        tokenFile,
        '--log',
        join(cluster.dir, 'edge.log'),
      ],
      { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] },
    );
    url = await new Promise<string>((resolve, reject) => {
      edge.on('message', (m: { type?: string; url?: string }) => m?.type === 'ready' && resolve(m.url as string));
      edge.once('exit', (code) => reject(new Error(`allegra edge dev exited with ${code}`)));
    });
    await waitFor(async () => (await request(`${url}/`, { headers: { host: 'app.test' } })).statusCode === 200, {
      what: 'route at the edge',
      timeoutMs: 15_000,
    });
  }, 60_000);

  afterAll(async () => {
    if (edge && edge.exitCode === null) {
      const exited = new Promise((r) => edge.once('exit', r));
      edge.kill('SIGTERM');
      await exited;
    }
    await cluster?.cleanup();
    stopUpstreams(ups);
  });

  it('never replays a request body: a POST that met the dead origin is answered 502, the others are served once', async () => {
    const count = async () => {
      const res = await request(`${ups[0]?.url}/count`);
      const a = ((await res.body.json()) as { counts: Record<string, number> }).counts['/echo'] ?? 0;
      const res2 = await request(`${ups[1]?.url}/count`);
      return a + (((await res2.body.json()) as { counts: Record<string, number> }).counts['/echo'] ?? 0);
    };
    const before = await count();
    // Concurrent, so that the live origin's load makes P2C send some of them to the dead one (first in the
    // file: once the dead origin has failed five times in a row it is ejected and gets nothing for a while).
    const answers = await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        const res = await request(`${url}/echo`, { method: 'POST', headers: { host: 'app.test' }, body: `body ${i}` });
        return { i, status: res.statusCode, text: await res.body.text(), id: res.headers['x-request-id'] };
      }),
    );
    const served = answers.filter((a) => a.status === 200);
    for (const a of served) expect(a.text).toBe(`body ${a.i}`);
    const refused = answers.filter((a) => a.status !== 200);
    expect(refused.length).toBeGreaterThan(0);
    for (const a of refused) {
      expect(a.status).toBe(502);
      expect(a.id).toBeTruthy();
    }
    // Each POST reached a replica at most once: the 502s were not retried on the live origin.
    expect((await count()) - before).toBe(served.length);
  });

  it('retries GETs on another origin when one is down', async () => {
    const statuses = await Promise.all(
      Array.from({ length: 30 }, async () => {
        const res = await request(`${url}/`, { headers: { host: 'app.test' } });
        await res.body.dump();
        return res.statusCode;
      }),
    );
    expect(statuses.join(' ')).toBe(Array(30).fill(200).join(' '));
  });

  it('answers 501 to WebSocket upgrades and gRPC, which Workers cannot carry to a replica', async () => {
    const port = Number(new URL(url).port);
    const ws = await rawRequest(
      port,
      'GET / HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      { timeoutMs: 1_000 },
    );
    expect(statusOf(ws.text)).toBe(501);
    expect(ws.text).toContain('WebSocket upgrades are not served by the Workers edge; connect to a gateway directly');
    const grpc = await request(`${url}/pkg.Svc/Call`, {
      method: 'POST',
      headers: { host: 'app.test', 'content-type': 'application/grpc' },
      body: '',
    });
    expect(grpc.statusCode).toBe(501);
    expect(grpc.headers['x-request-id']).toBeTruthy();
    expect(await grpc.body.text()).toBe('gRPC calls are not served by the Workers edge; connect to a gateway directly\n');
  });

  it('wrangler.toml builds the Worker with its Durable Object binding', async () => {
    const out = join(cluster.dir, 'wrangler-out');
    const { stdout } = await run('npx', ['wrangler', 'deploy', '--dry-run', '--outdir', out], {
      env: { ...process.env, CI: '1', WRANGLER_SEND_METRICS: 'false' },
      timeout: 60_000,
    });
    expect(stdout).toContain('env.ROUTES (RouteShard)');
    expect(stdout).toContain('--dry-run: exiting now.');
  }, 90_000);
});
