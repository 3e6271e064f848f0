/**
 * What the usage meter's counting relay costs: small GETs over 50 keep-alive connections to one upstream
 * (node:http on a Unix socket, its own process), directly, through socat (the relay every sandbox already
 * has, as a peer) and through the agent's counting relay (quorum-agent/usage/relay.ts, in this process).
 * autocannon runs as its own process; targets interleave over rounds; medians are reported.
 * Run: `npm run build && node dist/bench/usage-relay.js [--seconds 5] [--rounds 3]`.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CountingRelay } from '../quorum-agent/usage/relay.js';

const AUTOCANNON = fileURLToPath(new URL('../../node_modules/.bin/autocannon', import.meta.url));

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

async function waitForSocket(path: string): Promise<void> {
  const { existsSync } = await import('node:fs');
  for (let i = 0; i < 200 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 25));
}

function load(socket: string, seconds: number): Promise<{ rps: number; p99: number; total: number }> {
  return new Promise((resolve, reject) => {
    execFile(
      AUTOCANNON,
      ['-j', '-c', '50', '-d', String(seconds), '-S', socket, 'http://localhost/'],
      { maxBuffer: 16 * 1024 * 1024 },
      (err, stdout) => {
        if (err) return reject(err);
        const r = JSON.parse(stdout) as { requests: { average: number; total: number }; latency: { p99: number } };
        resolve({ rps: r.requests.average, p99: r.latency.p99, total: r.requests.total });
      },
    );
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function main(): Promise<void> {
  const seconds = arg('seconds', 5);
  const rounds = arg('rounds', 3);
  const dir = mkdtempSync(join(tmpdir(), 'allegra-relay-bench-'));
  const upstreamSock = join(dir, 'up.sock');
  const socatSock = join(dir, 'socat.sock');
  const procs: ChildProcess[] = [];
  const relay = new CountingRelay(join(dir, 'meter.sock'), `unix:${upstreamSock}`);
  try {
    procs.push(
      spawn(process.execPath, [
        '-e',
        `require('node:http').createServer((q,s)=>s.end('hello world!')).listen(${JSON.stringify(upstreamSock)})`,
      ]),
    );
    await waitForSocket(upstreamSock);
    procs.push(spawn('socat', [`UNIX-LISTEN:${socatSock},fork,backlog=1024`, `UNIX-CONNECT:${upstreamSock}`]));
    await waitForSocket(socatSock);
    await relay.start();
    const targets = { direct: upstreamSock, socat: socatSock, 'counting relay': relay.socketPath };
    const results: Record<string, Array<{ rps: number; p99: number; total: number }>> = {};
    let sentThroughRelay = 0;
    for (const [name, sock] of Object.entries(targets)) {
      const warm = await load(sock, 1);
      if (name === 'counting relay') sentThroughRelay += warm.total;
    }
    for (let round = 0; round < rounds; round++)
      for (const [name, sock] of Object.entries(targets)) (results[name] ??= []).push(await load(sock, seconds));
    const direct = median((results.direct ?? []).map((r) => r.rps));
    console.log(`usage relay: autocannon -c 50 -d ${seconds}, ${rounds} rounds, medians`);
    console.log('| target | req/s | p99 ms | µs added per request |');
    console.log('|---|---|---|---|');
    for (const [name, rs] of Object.entries(results)) {
      const rps = median(rs.map((r) => r.rps));
      console.log(
        `| ${name} | ${Math.round(rps)} | ${median(rs.map((r) => r.p99))} | ${name === 'direct' ? '-' : (1e6 / rps - 1e6 / direct).toFixed(1)} |`,
      );
    }
    sentThroughRelay += (results['counting relay'] ?? []).reduce((sum, r) => sum + r.total, 0);
    console.log(
      `counted: ${relay.traffic.requests} requests (autocannon completed ${sentThroughRelay}), ${relay.traffic.bytesIn} bytes in, ${relay.traffic.bytesOut} bytes out`,
    );
  } finally {
    await relay.close();
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
