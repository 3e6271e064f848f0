/**
 * Autoscaling and scale to zero on a real devnet (embedded registry, 3 agents, a gateway, sandboxed
 * replicas), everything through the gateway's HTTP port, in one run:
 *   - zero to first byte: the same Hono hello app (bench/wasm-app) on the process driver and as wasm, each
 *     scaled to zero (`--min 0 --idle 1`), then one GET through the gateway (held by the activator, woken
 *     through the registry, released on the first healthy replica); samples alternate between the two;
 *   - requests per second of one warm replica of each, through the gateway (autocannon, rounds interleaved);
 *   - a 10× load step (7 → 70 requests in flight, target 10 per replica planned at 7, Knative's 60 s stable
 *     and 6 s panic windows): when the autoscaler decides, when replicas serve, and the replica count over
 *     time (bench/autoscale.svg).
 *
 *   npm run build && node dist/bench/autoscale.js [--quick] [--json FILE]
 * `npm run bench` runs it too (a section of RESULTS.md, see lib/micro-sections.ts).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { loadKey } from '../cli/config.js';
import { RpcClient } from '../protocol/client.js';
import type { InstanceStatus } from '../protocol/types.js';
import { DEVNET_FREE_PORTS } from '../test/helpers/cli.js';
import { isMain } from './lib/microbench.js';
import { repoRoot } from './lib/paths.js';
import { percentileSorted } from './lib/stats.js';
import { mdTable } from './lib/table.js';
import { renderTimeline } from './lib/timeline-svg.js';

const ROOT = repoRoot();
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const log = (m: string) => process.stdout.write(`${m}\n`);

type AutocannonResult = { requests: { average: number }; non2xx: number; errors: number; latency: { p50: number; p99: number } };
const autocannon = createRequire(import.meta.url)('autocannon') as (o: Record<string, unknown>) => Promise<AutocannonResult>;

interface Options {
  coldRuns: number;
  rpsSeconds: number;
  rpsRounds: number;
  /** Stable window of the load-step instance (Knative's 60 s; quick runs use less). */
  windowSeconds: number;
  baseSeconds: number;
  stepSeconds: number;
  afterSeconds: number;
  json?: string;
}

interface Devnet {
  child: ChildProcess;
  http: string;
  admin: string;
  rpc: string;
  data: string;
  home: string;
}

async function startDevnet(work: string): Promise<Devnet> {
  const home = join(work, 'home');
  const data = join(work, 'devnet');
  const child = spawn(
    process.execPath,
    [CLI, 'devnet', '--json', ...DEVNET_FREE_PORTS, '--data', data, '--no-demo', '--wasm-cache', join(ROOT, 'bench', 'out', 'wasm-cache')],
    { env: { ...process.env, ALLEGRA_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stderr?.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-4000);
  });
  const info = await new Promise<{ http: string; admin: string; rpc: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`devnet not ready in 120 s: ${err}`)), 120_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      resolve(JSON.parse(out.slice(0, nl)));
    });
    child.once('exit', (code) => reject(new Error(`devnet exited (${code}): ${err}`)));
  });
  return { child, ...info, data, home };
}

function stopDevnet(d: Devnet): Promise<void> {
  return new Promise((resolve) => {
    if (d.child.exitCode !== null) return resolve();
    const force = setTimeout(() => d.child.kill('SIGKILL'), 20_000);
    d.child.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    d.child.kill('SIGINT');
  });
}

function cli(d: Devnet, args: string[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [CLI, ...args, '--json'],
      { env: { ...process.env, ALLEGRA_HOME: d.home }, timeout: 400_000 },
      (e, stdout, stderr) => (e ? reject(new Error(`allegra ${args.join(' ')}: ${stderr.trim()}`)) : resolve(JSON.parse(stdout))),
    );
  });
}

const pct = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50: percentileSorted(s, 50), p95: percentileSorted(s, 95), p99: percentileSorted(s, 99) };
};
const r1 = (n: number) => (Number.isFinite(n) ? (Math.round(n * 10) / 10).toFixed(1) : '–');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function measure(o: Options): Promise<{ markdown: string; svg: string; json: unknown }> {
  const work = mkdtempSync(join(tmpdir(), 'allegra-bench-autoscale-'));
  const d = await startDevnet(work);
  const gw = new Agent({ connections: 256 });
  try {
    await cli(d, ['keys', 'init']);
    const rpc = new RpcClient(d.rpc, loadKey(join(d.home, 'key')));
    const status = (name: string) => rpc.call<InstanceStatus>({ method: 'GET', path: `/v1/instances/${name}` });
    // The hello app with what its process needs beside it (the wasm one is bundled by the CLI).
    const app = join(work, 'hello');
    cpSync(join(ROOT, 'bench', 'wasm-app'), app, { recursive: true });
    for (const pkg of ['hono', '@hono/node-server'])
      cpSync(join(ROOT, 'node_modules', pkg), join(app, 'node_modules', pkg), { recursive: true });
    log('creating hello-process and hello-wasm (the first wasm compile takes tens of seconds)');
    await cli(d, ['create', 'hello-process', '--from', app, '--cmd', 'node server.mjs', '--replicas', '1:1']);
    await cli(d, ['create', 'hello-wasm', '--driver', 'wasm', '--from', join(app, 'app.js'), '--replicas', '1:1']);
    const get = async (host: string, path = '/') => {
      const t = performance.now();
      const res = await request(`${d.http}${path}`, { headers: { host }, dispatcher: gw });
      await res.body.text();
      return { status: res.statusCode, ms: performance.now() - t, held: Number(res.headers['x-allegra-cold-start'] ?? Number.NaN) };
    };

    // Zero to first byte.
    for (const n of ['hello-process', 'hello-wasm']) await cli(d, ['scale', n, '--min', '0', '--max', '1', '--idle', '1', '--window', '6']);
    const cold: Record<string, { total: number[]; held: number[] }> = {
      'hello-process': { total: [], held: [] },
      'hello-wasm': { total: [], held: [] },
    };
    for (let i = 0; i < o.coldRuns; i++) {
      for (const n of Object.keys(cold)) {
        const until = Date.now() + 30_000;
        while ((await status(n)).replicas.length > 0) {
          if (Date.now() > until) throw new Error(`${n} did not scale to zero`);
          await sleep(100);
        }
        await sleep(200);
        const r = await get(`${n}.localhost`);
        if (r.status !== 200) throw new Error(`${n}: status ${r.status} from zero`);
        cold[n]?.total.push(r.ms);
        cold[n]?.held.push(r.held);
      }
      log(
        `cold start ${i + 1}/${o.coldRuns}: process ${r1(cold['hello-process']?.total.at(-1) ?? 0)} ms, wasm ${r1(cold['hello-wasm']?.total.at(-1) ?? 0)} ms`,
      );
    }

    // Requests per second of one warm replica each, through the gateway.
    for (const n of Object.keys(cold)) await cli(d, ['scale', n, '--min', '1', '--max', '1']);
    for (const n of Object.keys(cold)) {
      const until = Date.now() + 30_000;
      while ((await status(n)).replicas.filter((r) => r.healthy).length < 1 && Date.now() < until) await sleep(100);
    }
    const rps: Record<string, AutocannonResult[]> = { 'hello-process': [], 'hello-wasm': [] };
    for (let round = 0; round < o.rpsRounds; round++) {
      for (const n of Object.keys(rps)) {
        const r = await autocannon({ url: d.http, headers: { host: `${n}.localhost` }, connections: 10, duration: o.rpsSeconds });
        rps[n]?.push(r);
        log(`req/s ${n} round ${round + 1}: ${Math.round(r.requests.average)}`);
      }
    }

    // The 10× load step.
    const stepApp = join(ROOT, 'test', 'fixtures', 'slow-app');
    await cli(d, ['create', 'step', '--from', stepApp, '--cmd', 'node server.mjs', '--replicas', '1:1']);
    await cli(d, ['scale', 'step', '--min', '1', '--max', '12', '--target', '10', '--window', String(o.windowSeconds)]);
    let clients = 0;
    let running = true;
    const done: number[] = [];
    const latencies: Array<[number, number]> = [];
    const failures = { count: 0 };
    const t0 = performance.now();
    const loops: Promise<void>[] = [];
    const setClients = (n: number) => {
      while (clients < n) {
        const me = ++clients;
        loops.push(
          (async () => {
            while (running && me <= clients) {
              const r = await get('step.localhost', '/slow?ms=100').catch(() => ({ status: 0, ms: 0 }));
              const at = (performance.now() - t0) / 1000;
              if (r.status === 200) {
                done.push(at);
                latencies.push([at, r.ms]);
              } else failures.count++;
            }
          })(),
        );
      }
      clients = n;
    };
    const timeline: Array<{ t: number; clients: number; desired: number; ready: number }> = [];
    const sampler = (async () => {
      while (running) {
        const s = await status('step').catch(() => null);
        if (s) {
          const desired = s.scale && s.instance.replicas.max > s.instance.replicas.min ? s.scale.desired : s.instance.replicas.min;
          timeline.push({ t: (performance.now() - t0) / 1000, clients, desired, ready: s.replicas.filter((r) => r.healthy).length });
        }
        await sleep(250);
      }
    })();
    setClients(7);
    await sleep(o.baseSeconds * 1000);
    const stepAt = (performance.now() - t0) / 1000;
    const stepWall = Date.now();
    log(`load step ×10 at ${r1(stepAt)} s`);
    setClients(70);
    await sleep(o.stepSeconds * 1000);
    const dropAt = (performance.now() - t0) / 1000;
    setClients(7);
    await sleep(o.afterSeconds * 1000);
    running = false;
    await Promise.all([...loops, sampler]);

    // When the autoscaler decided, from the agents' logs (its own clock), and when replicas served.
    const logs = join(d.data, 'logs');
    const decisions = readdirSync(logs)
      .filter((f) => f.startsWith('agent-'))
      .flatMap((f) => readFileSync(join(logs, f), 'utf8').split('\n'))
      .filter((l) => l.includes('"msg":"autoscaled"') && l.includes('"instance":"step"'))
      .map((l) => JSON.parse(l) as { time: number; from: number | null; to: number; panic: boolean })
      .sort((a, b) => a.time - b.time);
    const firstUp = decisions.find((x) => x.time >= stepWall && x.to > 1);
    const peak = Math.max(...timeline.filter((x) => x.t >= stepAt && x.t < dropAt).map((x) => x.desired));
    const firstExtra = timeline.find((x) => x.t >= stepAt && x.ready >= 2);
    const allReady = timeline.find((x) => x.t >= stepAt && x.ready >= peak);
    const lastDown = timeline.find((x) => x.t >= dropAt && x.desired <= 1);
    const perSecond = (from: number, to: number) => done.filter((t) => t >= from && t < to).length / Math.max(1e-9, to - from);
    const latencyIn = (from: number, to: number) => pct(latencies.filter(([t]) => t >= from && t < to).map(([, ms]) => ms));

    const svg = renderTimeline({
      title: `10× load step on the process driver (target 10, planned 7 per replica; stable window ${o.windowSeconds} s, panic ${o.windowSeconds / 10} s)`,
      yLabel: 'replicas',
      series: [
        { label: 'needed (in flight ÷ 7)', color: '#999999', dashed: true, points: timeline.map((x) => [x.t, Math.ceil(x.clients / 7)]) },
        { label: 'desired (autoscaler)', color: '#d62728', points: timeline.map((x) => [x.t, x.desired]) },
        { label: 'ready (healthy)', color: '#1f77b4', points: timeline.map((x) => [x.t, x.ready]) },
      ],
      markers: [
        { at: stepAt, label: 'load ×10' },
        { at: dropAt, label: 'load ÷10' },
      ],
    });

    const machine = `Node ${process.version}, ${cpus().length} cores, load average at the end ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`;
    const coldRows = Object.entries(cold).map(([n, c]) => {
      const t = pct(c.total);
      const h = pct(c.held);
      return [
        n === 'hello-wasm'
          ? 'wasm (the app as a component in the agent’s wasm host)'
          : 'process (node in a sandbox: bubblewrap, cgroups, relay)',
        String(t.n),
        r1(t.p50),
        r1(t.p95),
        r1(t.p99),
        r1(h.p50),
        r1(h.p95),
      ];
    });
    const rpsRows = Object.entries(rps).map(([n, rs]) => {
      const avgs = rs.map((r) => r.requests.average).sort((a, b) => a - b);
      return [
        n === 'hello-wasm' ? 'wasm, one replica' : 'process, one replica',
        String(Math.round(percentileSorted(avgs, 50))),
        rs.map((r) => Math.round(r.requests.average)).join(', '),
        String(
          percentileSorted(
            rs.map((r) => r.latency.p99).sort((a, b) => a - b),
            50,
          ),
        ),
        String(rs.reduce((s, r) => s + r.non2xx + r.errors, 0)),
      ];
    });
    const base = latencyIn(stepAt - 5, stepAt);
    const during = latencyIn(stepAt, stepAt + 10);
    const settled = latencyIn(stepAt + 15, dropAt);
    const markdown = [
      machine,
      '',
      mdTable(['zero to first byte, through the gateway', 'runs', 'p50 ms', 'p95 ms', 'p99 ms', 'held p50 ms', 'held p95 ms'], coldRows),
      '',
      '“held” is the activator’s `x-allegra-cold-start`: from the request’s arrival to its release on the first healthy replica (wake-up through the registry, autoscaler decision, replica start, health probe, record); the rest is the request itself.',
      '',
      mdTable(['req/s through the gateway (10 connections)', 'median', 'per round', 'p99 ms (median)', 'failed'], rpsRows),
      '',
      mdTable(
        ['10× load step (7 → 70 in flight)', 'value'],
        [
          [
            'first scale-up decision after the step',
            firstUp
              ? `${r1((firstUp.time - stepWall) / 1000)} s (${firstUp.from} → ${firstUp.to}, panic ${firstUp.panic ? 'yes' : 'no'})`
              : 'none',
          ],
          ['second replica serving', firstExtra ? `${r1(firstExtra.t - stepAt)} s` : 'never'],
          [`all ${peak} replicas serving`, allReady ? `${r1(allReady.t - stepAt)} s` : 'never'],
          ['back to one replica after the load fell', lastDown ? `${r1(lastDown.t - dropAt)} s` : `not within ${o.afterSeconds} s`],
          [
            'req/s before / first 10 s / settled',
            `${Math.round(perSecond(stepAt - 5, stepAt))} / ${Math.round(perSecond(stepAt, stepAt + 10))} / ${Math.round(perSecond(stepAt + 15, dropAt))}`,
          ],
          [
            'latency p50/p99 ms before / first 10 s / settled',
            `${r1(base.p50)}/${r1(base.p99)} / ${r1(during.p50)}/${r1(during.p99)} / ${r1(settled.p50)}/${r1(settled.p99)}`,
          ],
          ['failed requests', String(failures.count)],
        ],
      ),
      '',
      '![replicas over time under a 10× load step](autoscale.svg)',
    ].join('\n');
    const json = {
      machine,
      cold,
      rps: Object.fromEntries(Object.entries(rps).map(([k, v]) => [k, v.map((r) => r.requests.average)])),
      timeline,
      decisions,
      stepAt,
      dropAt,
      failures: failures.count,
    };
    if (o.json) writeFileSync(o.json, JSON.stringify(json, null, 2));
    return { markdown, svg, json };
  } finally {
    await gw.close();
    await stopDevnet(d);
    rmSync(work, { recursive: true, force: true });
  }
}

function section(markdown: string, o: Options): string {
  return [
    '#### Autoscaling and scale to zero (issue 15): zero to first byte, req/s, a 10× load step',
    '',
    `A devnet (embedded registry, 3 agents, a gateway, sandboxed replicas), every request through the gateway. Zero to first byte: the Hono hello app (\`bench/wasm-app\`) on the process driver and as wasm, each \`allegra scale NAME --min 0 --max 1 --idle 1\`, waited down to no replica, then one GET (samples alternate). Req/s: one warm replica each, autocannon through the gateway. Load step: \`test/fixtures/slow-app\` (the autoscaling tests' app) (100 ms requests) at 7 then 70 clients in a closed loop, \`--min 1 --max 12 --target 10 --window ${o.windowSeconds}\`. Command: \`npm run build && node dist/bench/autoscale.js\` (also part of \`npm run bench\`). Goals: zero to first byte p95 ≤ 300 ms (process), ≤ 20 ms (wasm).`,
    '',
    markdown,
  ].join('\n');
}

const FULL: Options = { coldRuns: 20, rpsSeconds: 5, rpsRounds: 3, windowSeconds: 60, baseSeconds: 20, stepSeconds: 30, afterSeconds: 90 };
const QUICK: Options = { coldRuns: 6, rpsSeconds: 3, rpsRounds: 1, windowSeconds: 12, baseSeconds: 8, stepSeconds: 12, afterSeconds: 25 };

export async function main(opts: { quick: boolean }): Promise<string> {
  const o = opts.quick ? QUICK : FULL;
  const r = await measure(o);
  mkdirSync(join(ROOT, 'bench'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'autoscale.svg'), r.svg);
  return section(r.markdown, o);
}

if (isMain(import.meta.url)) {
  const { values: args } = parseArgs({ options: { quick: { type: 'boolean', default: false }, json: { type: 'string' } } });
  const o = { ...(args.quick ? QUICK : FULL), ...(args.json ? { json: args.json } : {}) };
  measure(o).then(
    (r) => {
      writeFileSync(join(ROOT, 'bench', 'autoscale.svg'), r.svg);
      log(`\n${section(r.markdown, o)}\nwrote bench/autoscale.svg`);
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
