/**
 * Autoscaling, scale to zero with the gateway as activator, and the wasm driver, end to end on one real
 * devnet (embedded registry, 3 agent processes, a gateway process, sandboxed replicas) through the real
 * CLI and the gateway's HTTP port:
 *   - `allegra create NAME --driver wasm --from app.js` served through the gateway; many wasm instances in
 *     one host per agent; a wasm request over its memory or time limit refused while others keep answering;
 *   - a load step: replicas rise within the panic window, and come down after it;
 *   - scale to zero after the idle time, a request to the sleeping instance answered (x-allegra-cold-start,
 *     the cold-start histogram), and a burst of 1,000 concurrent requests against it failing none.
 * Load loops are bounded in time. The wasm compile cache is the one the wasm suites share across runs.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { InstanceStatus } from '../../protocol/types.js';
import { cliJson, DEVNET_FREE_PORTS, type DevnetInfo, startDevnet, stopDevnet } from '../helpers/cli.js';
import { copyPackageInto } from '../helpers/npm-app.js';
import { sleep, tempDir, waitFor } from '../helpers/tmp.js';

const WASM_APP = fileURLToPath(new URL('../fixtures/wasm-app/app.js', import.meta.url));
const SLOW_APP = fileURLToPath(new URL('../fixtures/slow-app/', import.meta.url));
const WASM_CACHE = join(tmpdir(), 'allegra-wasm-test-cache');
const GRPC_FIXTURE = fileURLToPath(new URL('../fixtures/grpc/', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface EchoMsg {
  text: string;
  n: number;
}
interface EchoClient extends grpc.Client {
  Say(
    req: EchoMsg,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res: EchoMsg) => void,
  ): grpc.ClientUnaryCall;
}

describe('autoscaling, scale to zero and the wasm driver through the gateway', () => {
  const dir = tempDir('allegra-autoscale-');
  const env = { ALLEGRA_HOME: `${dir.path}/home` };
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo;
  const clients: Agent[] = [];
  /** A client from its own loopback address (the gateway shares a route and a replica fairly between addresses). */
  const clientFrom = (address: string, connections: number) => {
    const a = new Agent({ connections, localAddress: address, headersTimeout: 60_000, bodyTimeout: 60_000 });
    clients.push(a);
    return a;
  };
  const main = clientFrom('127.0.0.1', 64);

  const get = async (host: string, path = '/', dispatcher: Agent = main) => {
    const res = await request(`${info.http}${path}`, { headers: { host }, dispatcher });
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
  };
  const status = (name: string) => cliJson<InstanceStatus>(['status', name], env);
  const healthyReplicas = async (name: string) => (await status(name)).replicas.filter((r) => r.healthy).length;

  beforeAll(async () => {
    devnet = await startDevnet(
      [...DEVNET_FREE_PORTS, '--data', `${dir.path}/devnet`, '--no-demo', '--wasm-cache', WASM_CACHE],
      env,
      120_000,
    );
    info = devnet.info;
    await cliJson(['keys', 'init'], env);
  }, 150_000);

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await stopDevnet(devnet, 15_000);
    dir.cleanup();
  }, 30_000);

  describe('the wasm driver', () => {
    it('creates a wasm instance from a Hono module and serves it through the gateway', async () => {
      const created = await cliJson<{ id: string; instance: { driver: string; version: number } }>(
        ['create', 'hello', '--driver', 'wasm', '--from', WASM_APP],
        env,
      );
      expect(created.instance.driver).toBe('wasm');
      const hello = await get('hello.localhost');
      expect(hello).toMatchObject({ status: 200, text: 'hello from hello' });
      const json = await get('hello.localhost', '/json?q=7');
      expect(json.status).toBe(201);
      expect(json.headers['x-app']).toBe('wasm-fixture');
      expect(JSON.parse(json.text)).toMatchObject({ method: 'GET', path: '/json', query: '7' });
      const s = await status('hello');
      expect(s.replicas).toHaveLength(3);
      // Wasm replicas have no process of their own (they live in the agent's wasm host); like every replica
      // they are published as the agent's counting relay (usage records), which relays to the host's socket.
      for (const r of s.replicas) {
        expect(r.pid).toBeNull();
        expect(r.endpoint).toMatch(/^unix:.*\/meter\/i-[0-9a-f]+\.\d+\.[0-9a-f]+\.sock$/);
      }
    }, 300_000);

    it('holds many wasm instances in one host per agent', async () => {
      // The same module under other names: compiled once (cache), loaded into the hosts already running.
      for (const name of ['hello2', 'hello3']) await cliJson(['create', name, '--driver', 'wasm', '--from', WASM_APP], env);
      for (const name of ['hello', 'hello2', 'hello3']) expect((await get(`${name}.localhost`)).text).toBe(`hello from ${name}`);
      const agentPids = new Set(info.agents.map((a) => a.pid));
      const hosts = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' })
        .split('\n')
        .filter((l) => l.includes('wasm/host-main.js'))
        .map((l) => l.trim().split(/\s+/).map(Number))
        .filter(([, ppid]) => agentPids.has(ppid as number));
      // Nine replicas, three host processes: one per agent.
      expect(hosts).toHaveLength(3);
      const perNode = new Map<string, number>();
      for (const name of ['hello', 'hello2', 'hello3'])
        for (const r of (await status(name)).replicas.filter((x) => x.healthy)) perNode.set(r.nodeId, (perNode.get(r.nodeId) ?? 0) + 1);
      expect([...perNode.values()]).toEqual([3, 3, 3]);
    }, 120_000);

    it('meters wasm replicas like every other: usage records count their requests, signed by their node', async () => {
      for (let i = 0; i < 20; i++) expect((await get('hello2.localhost')).text).toBe('hello from hello2');
      const usage = await waitFor(
        async () => {
          const u = await cliJson<{ nodes: Array<{ requests: number; bytesOut: number; verified: boolean }>; total: { requests: number } }>(
            ['usage', 'hello2'],
            env,
          );
          return u.total.requests >= 21 ? u : undefined;
        },
        { timeoutMs: 25_000, intervalMs: 1_000, what: 'usage records counting the wasm requests' },
      );
      for (const n of usage.nodes) expect(n.verified).toBe(true);
      expect(usage.nodes.reduce((sum, n) => sum + n.bytesOut, 0)).toBeGreaterThan(0);
    }, 60_000);

    it('refuses a wasm request over its memory or time limit while other instances keep answering', async () => {
      await cliJson(['create', 'hog', '--driver', 'wasm', '--from', WASM_APP, '--memory', '64'], env);
      const started = performance.now();
      const [memory, loop, other] = await Promise.all([
        get('hog.localhost', '/alloc?mb=200'),
        get('hog.localhost', '/loop'),
        (async () => {
          await sleep(200);
          const t = performance.now();
          const r = await get('hello.localhost');
          return { ...r, ms: performance.now() - t };
        })(),
      ]);
      expect(memory.status).toBe(503);
      expect(memory.headers['x-allegra-wasm-error']).toBe('memory');
      expect(loop.status).toBe(504);
      expect(loop.headers['x-allegra-wasm-error']).toBe('timeout');
      expect(other).toMatchObject({ status: 200, text: 'hello from hello' });
      // The other instance answered while the hog was still looping (its limit is 5 s).
      expect(other.ms).toBeLessThan(3_000);
      expect(performance.now() - started).toBeGreaterThan(4_000);
      // And the hog itself serves again, from a fresh instance.
      await waitFor(async () => (await get('hog.localhost')).text === 'hello from hog', { timeoutMs: 10_000, what: 'hog serving again' });
    }, 60_000);
  });

  describe('autoscaling', () => {
    /** `clients` closed-loop requests to /slow?ms=200 until `stop()`; every answer's status is counted. */
    const load = (host: string, clientsN: number) => {
      let running = true;
      const codes = new Map<number, number>();
      const loops = Array.from({ length: clientsN }, async () => {
        const deadline = Date.now() + 120_000;
        while (running && Date.now() < deadline) {
          const r = await get(host, '/slow?ms=200').catch(() => ({ status: 0 }));
          codes.set(r.status, (codes.get(r.status) ?? 0) + 1);
        }
      });
      return {
        codes,
        stop: async () => {
          running = false;
          await Promise.all(loops);
        },
      };
    };
    const desired = async (name: string) => (await status(name)).scale?.desired ?? -1;
    /** The elected autoscaler's decisions for an instance, from the agents' logs (time, from, to, panic). */
    const decisions = (name: string) => {
      const logs = join(dir.path, 'devnet', 'logs');
      return readdirSync(logs)
        .filter((f) => f.startsWith('agent-'))
        .flatMap((f) => readFileSync(join(logs, f), 'utf8').split('\n'))
        .filter((l) => l.includes('"msg":"autoscaled"'))
        .map((l) => JSON.parse(l) as { time: number; instance: string; from: number | null; to: number; panic: boolean })
        .filter((d) => d.instance === name)
        .sort((a, b) => a.time - b.time);
    };

    it('scales up within the panic window under a 10× load step and back down after it', async () => {
      await cliJson(['create', 'auto', '--from', SLOW_APP, '--cmd', 'node server.mjs', '--replicas', '1:1'], env);
      // 10 in flight per replica (planned at 7), a 6 s stable window (0.6 s panic window), 3 s idle.
      await cliJson(['scale', 'auto', '--min', '0', '--max', '8', '--target', '10', '--idle', '3', '--window', '6'], env);
      const base = load('auto.localhost', 5);
      let step: ReturnType<typeof load> | undefined;
      try {
        await waitFor(async () => (await desired('auto')) === 1 && (await healthyReplicas('auto')) === 1, {
          timeoutMs: 20_000,
          what: 'one replica at 5 in flight',
        });
        await sleep(3_000);
        expect(await desired('auto')).toBe(1);
        const stepAt = Date.now();
        step = load('auto.localhost', 45);
        // The first decision after the step scales up, in panic, within the panic window (Knative's is 6 s;
        // this instance's 0.6 s).
        const rise = await waitFor(() => decisions('auto').find((d) => d.time >= stepAt && d.to > 1), {
          timeoutMs: 6_000,
          what: 'a scale-up decision within the panic window',
        });
        expect(rise.time - stepAt).toBeLessThan(6_000);
        expect(rise.panic).toBe(true);
        // 50 in flight at 7 per replica: 7 or 8 replicas, spread over the three members.
        await waitFor(async () => (await healthyReplicas('auto')) >= 6, { timeoutMs: 20_000, what: 'replicas serving the step' });
        expect((await status('auto')).scale?.desired).toBeGreaterThanOrEqual(7);
        expect(new Set((await status('auto')).replicas.map((r) => r.nodeId)).size).toBe(3);
        await step.stop();
        // Back to the base load: the panic ends a stable window later, then the count halves per decision at most.
        await waitFor(async () => (await desired('auto')) === 1, { timeoutMs: 40_000, intervalMs: 250, what: 'scale down to one' });
        await waitFor(async () => (await status('auto')).replicas.length === 1, { timeoutMs: 15_000, what: 'extra replicas gone' });
        const down = decisions('auto').filter((d) => d.time > stepAt && d.from !== null && d.to < d.from);
        expect(down.length).toBeGreaterThan(0);
        for (const d of down) {
          expect(d.panic).toBe(false);
          expect(d.to).toBeGreaterThanOrEqual(Math.floor((d.from as number) / 2));
        }
      } finally {
        await Promise.all([base.stop(), step?.stop()]);
      }
      // Not one request failed through the step and the scale-down.
      for (const codes of [base.codes, step?.codes ?? new Map()]) expect([...codes.keys()]).toEqual([200]);
    }, 120_000);

    it('scales to zero after the idle time and answers a request to the sleeping instance', async () => {
      await waitFor(async () => (await status('auto')).replicas.length === 0, { timeoutMs: 15_000, what: 'no replica left' });
      expect((await status('auto')).scale).toMatchObject({ desired: 0, reason: expect.stringMatching(/scaled to zero/) });
      const r = await get('auto.localhost', '/');
      expect(r.status).toBe(200);
      const coldMs = Number(r.headers['x-allegra-cold-start']);
      expect(Number.isFinite(coldMs) && coldMs >= 0).toBe(true);
      const metrics = await (await request(`${info.admin}/metrics`)).body.text();
      expect(metrics).toMatch(/allegra_gateway_cold_start_seconds_count\{route="auto"\} [1-9]/);
    }, 60_000);

    it('answers every one of 1,000 concurrent requests against a sleeping instance', async () => {
      await waitFor(async () => (await status('auto')).replicas.length === 0, { timeoutMs: 20_000, what: 'asleep again' });
      // Five client addresses of 200 each: one address may hold half of a replica (the gateway's fair share).
      const senders = [2, 3, 4, 5, 6].map((i) => clientFrom(`127.0.0.${i}`, 200));
      const results = await Promise.all(
        Array.from({ length: 1_000 }, (_, i) =>
          get('auto.localhost', '/slow?ms=50', senders[i % senders.length]).then(
            (res) => ({
              status: res.status,
              cold: res.headers['x-allegra-cold-start'] !== undefined,
              text: res.status === 200 ? '' : res.text,
            }),
            (err: Error) => ({ status: 0, cold: false, err: err.message }),
          ),
        ),
      );
      const failed = results.filter((x) => x.status !== 200);
      expect(failed.slice(0, 3)).toEqual([]);
      expect(failed).toHaveLength(0);
      expect(results.filter((x) => x.cold).length).toBeGreaterThan(0);
    }, 90_000);

    it('holds a gRPC call for a sleeping gRPC app and answers it once a replica is up', async () => {
      // A grpc-js server (h2c only: it never answers HTTP/1) deployed with its node_modules, scaled to zero.
      const app = join(dir.path, 'grpc-app');
      mkdirSync(app);
      cpSync(GRPC_FIXTURE, app, { recursive: true });
      for (const pkg of ['@grpc/grpc-js', '@grpc/proto-loader']) copyPackageInto(app, pkg, ROOT);
      await cliJson(['create', 'rpc', '--from', app, '--cmd', 'node server.mjs', '--replicas', '1:1'], env);
      // Healthy (the probe asks again over h2c), so routed.
      await waitFor(async () => (await healthyReplicas('rpc')) === 1, { timeoutMs: 30_000, what: 'the gRPC replica healthy' });
      await cliJson(['scale', 'rpc', '--min', '0', '--max', '1', '--idle', '1'], env);
      await waitFor(async () => (await status('rpc')).replicas.length === 0, { timeoutMs: 30_000, what: 'the gRPC app asleep' });
      const def = protoLoader.loadSync(join(GRPC_FIXTURE, 'echo.proto'));
      const Echo = (grpc.loadPackageDefinition(def) as unknown as { allegra: { test: { Echo: grpc.ServiceClientConstructor } } }).allegra
        .test.Echo;
      const client = new Echo(new URL(info.http).host, grpc.credentials.createInsecure(), {
        'grpc.default_authority': 'rpc.localhost',
      }) as unknown as EchoClient;
      try {
        const { reply, headers } = await new Promise<{ reply: EchoMsg; headers: grpc.Metadata }>((resolve, reject) => {
          let headers = new grpc.Metadata();
          const call = client.Say({ text: 'wake', n: 3 }, new grpc.Metadata(), { deadline: Date.now() + 30_000 }, (err, res) =>
            err ? reject(err) : resolve({ reply: res, headers }),
          );
          call.on('metadata', (m) => {
            headers = m;
          });
        });
        expect(reply).toMatchObject({ text: expect.stringMatching(/^grpc:wake:/), n: 3 });
        expect(Number(headers.get('x-allegra-cold-start')[0])).toBeGreaterThanOrEqual(0);
      } finally {
        client.close();
      }
    }, 90_000);

    it('holds a WebSocket handshake for a sleeping instance and completes it once a replica is up', async () => {
      await waitFor(async () => (await status('auto')).replicas.length === 0, { timeoutMs: 20_000, what: 'asleep again' });
      const ws = new WebSocket(`${info.http.replace(/^http/, 'ws')}/ws`, { headers: { host: 'auto.localhost' } });
      try {
        const head = await new Promise<IncomingMessage>((resolve, reject) => {
          ws.once('upgrade', resolve);
          ws.once('unexpected-response', (_req, res) => reject(new Error(`answered ${res.statusCode} instead of 101`)));
          ws.once('error', reject);
        });
        expect(head.statusCode).toBe(101);
        expect(Number(head.headers['x-allegra-cold-start'])).toBeGreaterThanOrEqual(0);
        expect(head.headers['x-replica']).toBeDefined();
      } finally {
        ws.terminate();
      }
    }, 60_000);
  });
});
