/**
 * The wasm runtime beside the process driver's way of running the same app, in one run:
 *   - zero to first byte: a fresh load of a replica into a running wasm host (instantiation + first
 *     request), the first request of a loaded-but-not-instantiated replica, and the same Hono app started
 *     as a plain `node` process (spawn → listening → first response: the process driver's cold start);
 *   - requests per second of one wasm instance (kept warm; and instantiated per request) beside the
 *     same app as one node process, autocannon closed loop over the replica's own socket.
 * Rounds are interleaved so machine load hits every target alike.
 *
 *   npm run build && node dist/bench/wasm.js [--runs N] [--seconds S] [--rounds R] [--json FILE]
 * `npm run bench` runs it too (as a section of RESULTS.md, see lib/micro-sections.ts).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { freePort } from '../quorum-agent/ports.js';
import { compileApp } from '../quorum-agent/wasm/compile.js';
import { WasmHostClient } from '../quorum-agent/wasm/index.js';
import { isMain } from './lib/microbench.js';
import { percentileSorted } from './lib/stats.js';
import { mdTable } from './lib/table.js';

const APP_DIR = fileURLToPath(new URL('../../bench/wasm-app/', import.meta.url));
const HONO = fileURLToPath(new URL('../../node_modules/hono/', import.meta.url));
const CACHE = fileURLToPath(new URL('../../bench/out/wasm-cache/', import.meta.url));

type AutocannonResult = {
  requests: { average: number; total: number };
  non2xx: number;
  errors: number;
  latency: { p50: number; p99: number };
};
const autocannon = createRequire(import.meta.url)('autocannon') as (o: Record<string, unknown>) => Promise<AutocannonResult>;

interface WasmBenchOptions {
  runs: number;
  seconds: number;
  rounds: number;
  connections: number;
  /** Node flags for the wasm host process (to compare V8 settings). */
  hostFlags?: string[];
  json?: string;
}

const log = (m: string) => process.stdout.write(`${m}\n`);

/** One GET; returns the instantiation time the wasm host reports for it (0 when the instance was warm). */
async function firstByte(dispatcher: Agent, origin: string): Promise<number> {
  const res = await request(`${origin}/`, { dispatcher });
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
  await res.body.text();
  return Number(res.headers['x-allegra-instantiate-ms'] ?? 0);
}

/** Time from spawning `node server.mjs` to the first 200, retrying the connection every 2 ms. */
async function nodeColdStart(): Promise<{ ms: number; child: ChildProcess; port: number }> {
  const port = await freePort();
  const t = performance.now();
  const child = spawn(process.execPath, [join(APP_DIR, 'server.mjs')], { env: { ...process.env, PORT: String(port) }, stdio: 'ignore' });
  const agent = new Agent({ connect: { timeout: 1000 } });
  try {
    for (;;) {
      try {
        await firstByte(agent, `http://127.0.0.1:${port}`);
        return { ms: performance.now() - t, child, port };
      } catch {
        if (performance.now() - t > 10_000) throw new Error('node app did not answer within 10 s');
        await new Promise((r) => setTimeout(r, 2));
      }
    }
  } finally {
    await agent.close();
  }
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

function pct(samples: number[]): { p50: number; p95: number; p99: number; n: number } {
  const s = [...samples].sort((a, b) => a - b);
  return { p50: percentileSorted(s, 50), p95: percentileSorted(s, 95), p99: percentileSorted(s, 99), n: s.length };
}

export async function measure(o: WasmBenchOptions): Promise<string> {
  const { runs: RUNS, seconds: SECONDS, rounds: ROUNDS, connections: CONNECTIONS, hostFlags: HOST_FLAGS } = o;
  const work = join(tmpdir(), `allegra-bench-wasm-${process.pid}`);
  mkdirSync(join(work, 's'), { recursive: true });
  const children: ChildProcess[] = [];
  let host: WasmHostClient | undefined;
  try {
    const src = join(work, 'app');
    cpSync(join(APP_DIR, 'app.js'), join(src, 'app.js'));
    cpSync(HONO, join(src, 'node_modules', 'hono'), { recursive: true });
    const t0 = performance.now();
    const compiled = await compileApp({ source: src, cacheDir: CACHE, timeoutMs: 300_000, onProgress: (s) => log(`compile: ${s}`) });
    log(`compiled ${compiled.key.slice(0, 16)}… (${compiled.cached ? 'cache hit' : 'fresh'}) in ${Math.round(performance.now() - t0)} ms`);

    // The first load of an artifact in a new host also compiles its WebAssembly.Modules: measured apart.
    const firstLoads: number[] = [];
    for (let i = 0; i < 3; i++) {
      const h = await WasmHostClient.start({ logFile: join(work, `host-${i}.log`), execArgv: HOST_FLAGS });
      const sock = join(work, 's', `first-${i}.sock`);
      const t = performance.now();
      await h.load({ replicaId: `first-${i}`, artifactDir: compiled.dir, socketPath: sock, logFile: join(work, 'guest.log') });
      const a = new Agent({ connect: { socketPath: sock } });
      await firstByte(a, 'http://localhost');
      firstLoads.push(performance.now() - t);
      await a.close();
      await h.stop();
    }

    host = await WasmHostClient.start({ logFile: join(work, 'host.log'), execArgv: HOST_FLAGS });
    // Warm the host's module cache and the spare workers for this artifact, as a running agent would be.
    await host.load({
      replicaId: 'warm',
      artifactDir: compiled.dir,
      socketPath: join(work, 's', 'warm.sock'),
      logFile: join(work, 'guest.log'),
    });

    // Cold starts are measured from the host's steady state: spare workers booted and warmed (a burst of
    // loads faster than spares boot pays a worker boot on top, reported as `notWarm`).
    let notWarm = 0;
    const sparesReady = async (): Promise<void> => {
      const until = Date.now() + 5_000;
      while ((await host!.stats()).readySpares < 2) {
        if (Date.now() > until) {
          notWarm++;
          return;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const fresh: number[] = [];
    const freshLoadCall: number[] = [];
    let adopted = 0;
    const lazy: number[] = [];
    const lazyInstantiate: number[] = [];
    const nodeCold: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      // wasm, fresh load: load → instantiate → first byte.
      const sock = join(work, 's', `f${i}.sock`);
      await sparesReady();
      let t = performance.now();
      const loaded = await host.load({ replicaId: `f${i}`, artifactDir: compiled.dir, socketPath: sock, logFile: join(work, 'guest.log') });
      if (loaded.adopted) adopted++;
      freshLoadCall.push(performance.now() - t);
      let a = new Agent({ connect: { socketPath: sock } });
      await firstByte(a, 'http://localhost');
      fresh.push(performance.now() - t);
      await a.close();
      await host.unload(`f${i}`);

      // wasm, loaded but not instantiated: the first request instantiates.
      const lsock = join(work, 's', `l${i}.sock`);
      await sparesReady();
      await host.load({ replicaId: `l${i}`, artifactDir: compiled.dir, socketPath: lsock, logFile: join(work, 'guest.log'), eager: false });
      a = new Agent({ connect: { socketPath: lsock } });
      t = performance.now();
      lazyInstantiate.push(await firstByte(a, 'http://localhost'));
      lazy.push(performance.now() - t);
      await a.close();
      await host.unload(`l${i}`);

      // The same app as a fresh node process (every other run: a process start costs far more).
      if (i % 2 === 0) {
        const n = await nodeColdStart();
        nodeCold.push(n.ms);
        await stop(n.child);
      }
    }

    // Throughput: one warm wasm instance, one per-request wasm replica, one node process; interleaved rounds.
    const rpsSock = join(work, 's', 'rps.sock');
    const perReqSock = join(work, 's', 'perreq.sock');
    await host.load({
      replicaId: 'rps',
      artifactDir: compiled.dir,
      socketPath: rpsSock,
      logFile: join(work, 'guest.log'),
      limits: { maxQueue: 1000 },
    });
    await host.load({
      replicaId: 'perreq',
      artifactDir: compiled.dir,
      socketPath: perReqSock,
      logFile: join(work, 'guest.log'),
      mode: 'per-request',
      limits: { maxQueue: 1000 },
    });
    const node = await nodeColdStart();
    children.push(node.child);
    const rps: Record<string, number[]> = { 'wasm, per replica (warm)': [], 'wasm, per request': [], 'node process': [] };
    const p99: Record<string, number[]> = { 'wasm, per replica (warm)': [], 'wasm, per request': [], 'node process': [] };
    const failures: Record<string, number> = {};
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, opts] of [
        ['wasm, per replica (warm)', { url: 'http://localhost/', socketPath: rpsSock }],
        ['wasm, per request', { url: 'http://localhost/', socketPath: perReqSock }],
        ['node process', { url: `http://127.0.0.1:${node.port}/` }],
      ] as const) {
        const res = await autocannon({ ...opts, connections: CONNECTIONS, duration: SECONDS, timeout: 10 });
        rps[name]!.push(res.requests.total / SECONDS);
        p99[name]!.push(res.latency.p99);
        failures[name] = (failures[name] ?? 0) + res.non2xx + res.errors;
        log(`round ${r + 1} ${name}: ${Math.round(res.requests.total / SECONDS)} req/s`);
      }
    }

    const rows = [
      ['wasm: fresh load of a replica (load → instantiate → first byte)', pct(fresh)],
      ['… of which the load call (control IPC, worker init, socket)', pct(freshLoadCall)],
      ['wasm: loaded, not instantiated (first request instantiates)', pct(lazy)],
      ['… of which instantiation inside the worker', pct(lazyInstantiate)],
      ['node process started fresh (spawn → first byte)', pct(nodeCold)],
      ['wasm: first load of the artifact in a new host (module compile + instantiate)', pct(firstLoads)],
    ] as const;
    const f = (n: number) => n.toFixed(1);
    const coldTable = mdTable(
      ['cold start', 'runs', 'p50 ms', 'p95 ms', 'p99 ms'],
      rows.map(([name, p]) => [name, String(p.n), f(p.p50), f(p.p95), f(p.p99)]),
      ['l', 'r', 'r', 'r', 'r'],
    );
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
    const rpsTable = mdTable(
      ['target (one instance)', 'req/s median', 'req/s per round', 'p99 ms (median)', 'failed'],
      Object.keys(rps).map((k) => [
        k,
        String(Math.round(med(rps[k]!))),
        rps[k]!.map((x) => Math.round(x)).join(', '),
        String(med(p99[k]!)),
        String(failures[k] ?? 0),
      ]),
      ['l', 'r', 'r', 'r', 'r'],
    );
    const la = loadavg()
      .map((x) => x.toFixed(2))
      .join(' ');
    const out = [
      `Node ${process.version}, ${cpus().length} cores, host flags '${HOST_FLAGS?.join(' ') ?? 'default'}', load average at the end ${la}; runs ${RUNS} (spares not warm before ${notWarm} loads; ${adopted} fresh loads took over a prepared instance), rounds ${ROUNDS} × ${SECONDS} s, ${CONNECTIONS} connections.`,
      '',
      coldTable,
      '',
      rpsTable,
    ].join('\n');
    if (o.json) {
      const data = {
        notWarm,
        adopted,
        fresh,
        freshLoadCall,
        lazy,
        lazyInstantiate,
        nodeCold,
        firstLoads,
        rps,
        p99,
        failures,
        node: process.version,
        loadavg: loadavg(),
      };
      writeFileSync(o.json, JSON.stringify(data, null, 2));
    }
    return out;
  } finally {
    for (const c of children) await stop(c);
    await host?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

/** The RESULTS.md section (`npm run bench`; `--quick` runs fewer rounds). */
export async function main(opts: { quick: boolean }): Promise<string> {
  const o = opts.quick ? { runs: 15, seconds: 3, rounds: 1, connections: 10 } : { runs: 40, seconds: 5, rounds: 3, connections: 10 };
  const table = await measure(o);
  return [
    '#### wasm runtime: zero to first byte and requests per second (issue 15)',
    '',
    'The benchmark Hono app (`bench/wasm-app/app.js`) compiled once to a component and served by a wasm host process over a Unix socket, beside the same app as a plain `node` process (`@hono/node-server`, `bench/wasm-app/server.mjs`) started fresh each run, which is the process driver’s cold start. Cold starts are measured with the host’s spare workers warmed; req/s is autocannon over one replica’s socket, rounds interleaved. Command: `npm run build && node dist/bench/wasm.js`. Goal: wasm p95 ≤ 20 ms.',
    '',
    table,
  ].join('\n');
}

if (isMain(import.meta.url)) {
  const { values: args } = parseArgs({
    options: {
      runs: { type: 'string', default: '40' },
      seconds: { type: 'string', default: '5' },
      rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '10' },
      json: { type: 'string' },
      'host-flags': { type: 'string', default: '' },
    },
  });
  measure({
    runs: Number(args.runs),
    seconds: Number(args.seconds),
    rounds: Number(args.rounds),
    connections: Number(args.connections),
    hostFlags: args['host-flags'] ? args['host-flags'].split(' ').filter(Boolean) : undefined,
    json: args.json,
  }).then(
    (out) => {
      log(`\n${out}`);
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
