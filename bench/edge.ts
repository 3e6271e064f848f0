/**
 * The Workers edge: what its hop adds to a request's latency, and how long a route change in the registry
 * takes to be served at the edge. One Node gateway (a real `allegra gateway` process with an edge token)
 * in front of one replica process; the edge is the Worker in workerd (edge/dev.ts: Miniflare, its route
 * shards in Durable Objects, fed by the bridge). Sequential requests (one at a time, keep-alive), the two
 * paths interleaved in rounds so drift hits both alike. Propagation: a new instance and route are written
 * to the registry, then the edge is polled every 5 ms until it serves the host (and after a delete, until
 * it answers 404). Command: `npm run build && node dist/bench/edge.js`.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { Agent, request } from 'undici';
import { startEdgeDev } from '../edge/dev.js';
import { keys } from '../protocol/keys.js';
import { generateKeyPair } from '../protocol/signing.js';
import { seedInstance } from '../registry/seed.js';
import { makeTempDir } from './lib/proc.js';
import { percentileSorted } from './lib/stats.js';
import { Upstreams } from './proxy/upstream.js';
import { startAllegraGateway } from './targets/allegra.js';

const percentile = (xs: number[], p: number) =>
  percentileSorted(
    [...xs].sort((a, b) => a - b),
    p,
  );
const ROUNDS = 5;
const PER_ROUND = 400;
const CHANGES = 10;
const HOST = 'bench.localhost';

async function timeRequests(base: string, agent: Agent, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const res = await request(`${base}/`, { headers: { host: HOST }, dispatcher: agent });
    await res.body.dump();
    if (res.statusCode !== 200) throw new Error(`${base} answered ${res.statusCode}`);
    out.push(performance.now() - t0);
  }
  return out;
}

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    if (await check()) return performance.now() - t0;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`not seen within ${timeoutMs} ms`);
}

const status = async (base: string, host: string) => {
  const res = await request(`${base}/`, { headers: { host } });
  await res.body.dump();
  return res.statusCode;
};

async function main(): Promise<void> {
  const dir = makeTempDir('allegra-bench-edge-');
  const tokenFile = join(dir, 'edge.token');
  const edgeToken = randomBytes(24).toString('base64url');
  writeFileSync(tokenFile, edgeToken, { mode: 0o600 });
  const ups = await Upstreams.start(1, undefined);
  const gw = await startAllegraGateway({ upstreams: ups.urls, accessLog: false, config: { edgeTokenFile: tokenFile, healthCheck: false } });
  const edge = await startEdgeDev({ registry: gw.registry, origins: [gw.url], edgeToken, log: pino({ level: 'warn' }) });
  const agent = new Agent({ keepAliveTimeout: 30_000 });
  try {
    await until(async () => (await status(edge.url, HOST)) === 200, 10_000);
    // Warm-up: JIT on both sides, the isolate's route cache, connections.
    await timeRequests(gw.url, agent, 300);
    await timeRequests(edge.url, agent, 300);
    const direct: number[] = [];
    const viaEdge: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      direct.push(...(await timeRequests(gw.url, agent, PER_ROUND)));
      viaEdge.push(...(await timeRequests(edge.url, agent, PER_ROUND)));
    }
    const owner = generateKeyPair();
    const added: number[] = [];
    const removed: number[] = [];
    for (let i = 0; i < CHANGES; i++) {
      const app = seedInstance(owner, `late${i}`, 'localhost', { cmd: 'bench', replicas: { min: 1, max: 1 } });
      // The new route points at an instance with no replica: the edge serves it (forwards it) as soon as
      // it knows it, and the gateway answers 503; 404 means the edge does not know it yet.
      await gw.registry.txn({ compare: [], success: app.ops });
      added.push(await until(async () => (await status(edge.url, app.route.host)) !== 404, 10_000));
      await gw.registry.delete(keys.route(app.route.host));
      removed.push(await until(async () => (await status(edge.url, app.route.host)) === 404, 10_000));
    }
    const row = (label: string, xs: number[]) =>
      `| ${label} | ${xs.length} | ${percentile(xs, 50).toFixed(2)} | ${percentile(xs, 90).toFixed(2)} | ${percentile(xs, 99).toFixed(2)} |`;
    const lines = [
      `### The Workers edge hop and route propagation`,
      '',
      `Command: \`npm run build && node dist/bench/edge.js\`; ${new Date().toISOString()}; 1-min load average ${(await import('node:os')).loadavg()[0]?.toFixed(2)} on 2 shared cores.`,
      '',
      '| path (sequential GETs, keep-alive) | requests | p50 ms | p90 ms | p99 ms |',
      '| :--- | ---: | ---: | ---: | ---: |',
      row('client → Node gateway → replica', direct),
      row('client → Workers edge (workerd) → Node gateway → replica', viaEdge),
      '',
      `Added by the edge hop: p50 +${(percentile(viaEdge, 50) - percentile(direct, 50)).toFixed(2)} ms, p99 +${(percentile(viaEdge, 99) - percentile(direct, 99)).toFixed(2)} ms.`,
      '',
      '| route change in the registry → seen at the edge | changes | min ms | median ms | max ms |',
      '| :--- | ---: | ---: | ---: | ---: |',
      `| route added | ${added.length} | ${Math.min(...added).toFixed(0)} | ${percentile(added, 50).toFixed(0)} | ${Math.max(...added).toFixed(0)} |`,
      `| route removed | ${removed.length} | ${Math.min(...removed).toFixed(0)} | ${percentile(removed, 50).toFixed(0)} | ${Math.max(...removed).toFixed(0)} |`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await agent.close();
    await edge.stop();
    await gw.stop();
    await ups.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
