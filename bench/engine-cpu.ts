/**
 * The gateway's CPU time per small GET, this build beside another (`--baseline DIR`, a built checkout of
 * an earlier commit), measured in the same run. Requests per second on this shared 2-core machine move
 * by ±15–20 % between runs with other tenants' load; the CPU time the gateway process itself spends per
 * request (utime + stime of all its threads, from /proc, over a fixed number of requests) is far less
 * sensitive to that, so it is the figure that says whether a change made the hot path dearer. Both
 * gateways, one replica process and the load generator (autocannon, in this process) run at once; rounds
 * alternate the two gateways. Command: `npm run build && node dist/bench/engine-cpu.js --baseline DIR`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Upstreams } from './proxy/upstream.js';
import { startAllegraGateway } from './targets/allegra.js';

interface AutocannonResult {
  requests: { total: number; average: number };
  non2xx: number;
  errors: number;
}
const autocannon = createRequire(import.meta.url)('autocannon') as (opts: Record<string, unknown>) => Promise<AutocannonResult>;

const ROUNDS = 6;
const REQUESTS = 20_000;
const HOST = 'bench.localhost';
const TICKS_PER_SEC = 100; // USER_HZ on Linux

/** CPU seconds (user + system, all threads) a process has used. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SEC;
}

async function load(url: string, amount: number): Promise<{ requests: number; rps: number; non2xx: number }> {
  const r = await autocannon({ url, connections: 50, amount, headers: { host: HOST } });
  return { requests: r.requests.total, rps: r.requests.average, non2xx: r.non2xx + r.errors };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

async function main(): Promise<void> {
  const i = process.argv.indexOf('--baseline');
  const baseline = i > 0 ? process.argv[i + 1] : undefined;
  const baselineCli = baseline ? join(baseline, 'dist', 'cli', 'main.js') : '';
  if (!baseline || !existsSync(baselineCli))
    throw new Error('usage: node dist/bench/engine-cpu.js --baseline DIR (DIR built: DIR/dist/cli/main.js)');
  const ups = await Upstreams.start(1, undefined);
  const targets = [
    { name: 'this build', gw: await startAllegraGateway({ upstreams: ups.urls }) },
    { name: `baseline (${baseline})`, gw: await startAllegraGateway({ upstreams: ups.urls, cli: baselineCli }) },
  ];
  const perRequestUs = targets.map(() => [] as number[]);
  const rps = targets.map(() => [] as number[]);
  try {
    for (const t of targets) await load(t.gw.url, 5_000); // warm-up: JIT, pools
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate which gateway goes first, so drift within a round hits both alike.
      const order = r % 2 === 0 ? [0, 1] : [1, 0];
      for (const k of order) {
        const t = targets[k] as (typeof targets)[number];
        const before = t.gw.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
        const res = await load(t.gw.url, REQUESTS);
        const after = t.gw.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
        if (res.non2xx > 0) throw new Error(`${t.name}: ${res.non2xx} failed requests`);
        (perRequestUs[k] as number[]).push(((after - before) * 1e6) / res.requests);
        (rps[k] as number[]).push(res.rps);
      }
    }
  } finally {
    for (const t of targets) await t.gw.stop();
    await ups.stop();
  }
  const lines = [
    `Command: \`node dist/bench/engine-cpu.js --baseline ${baseline}\`; ${new Date().toISOString()}; 1-min load average ${loadavg()[0]?.toFixed(2)} on 2 shared cores; ${ROUNDS} alternating rounds of ${REQUESTS} GETs (12 B), 50 connections.`,
    '',
    '| gateway | CPU µs per request, median (min–max) | req/s, median (min–max) |',
    '| :--- | ---: | ---: |',
    ...targets.map((t, k) => {
      const us = perRequestUs[k] as number[];
      const rs = rps[k] as number[];
      return `| ${t.name} | ${median(us).toFixed(1)} (${Math.min(...us).toFixed(1)}–${Math.max(...us).toFixed(1)}) | ${Math.round(median(rs))} (${Math.round(Math.min(...rs))}–${Math.round(Math.max(...rs))}) |`;
    }),
    '',
    `This build ÷ baseline, CPU per request: ${(median(perRequestUs[0] as number[]) / median(perRequestUs[1] as number[])).toFixed(3)}.`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
