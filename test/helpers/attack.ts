/**
 * Tools for the attack suite: attackers run as child processes at the lowest priority (their busy loops
 * must not delay the probe), a well-behaved probe process that sends one GET every 20 ms from a loopback
 * address of its own and records each answer's status and latency, and the gateway's resident memory.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { raisePriority } from './scheduling.js';

export const ATTACKS = fileURLToPath(new URL('../fixtures/attacks/', import.meta.url));

/**
 * Attackers run at the lowest CPU priority: on a real network their CPU is their own machine's, not the
 * gateway's, but here they share two cores with the gateway, its replicas and the probe. `nice` keeps the
 * attack's own cost from being counted as the gateway's, while every byte of the attack still arrives.
 */
const NICE = ['nice', '-n', '19'];

/** Live attacker processes, killed by `stopAttackers` (also when a test fails). */
const attackers = new Set<ChildProcess>();

/** Runs an attacker script to completion (it stops itself) and returns its JSON summary. */
export function runAttacker(script: string, args: string[], timeoutMs: number): Promise<Record<string, number>> {
  const child = spawn(NICE[0] as string, [...NICE.slice(1), process.execPath, `${ATTACKS}${script}`, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  attackers.add(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(kill);
      attackers.delete(child);
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as Record<string, number>);
      } catch {
        reject(new Error(`attacker ${script} exited with ${code} and printed ${JSON.stringify(out)}`));
      }
    });
  });
}

/** Runs a command (h2load, curl…) as an attacker, bounded by its own options and by `timeoutMs`. */
export function runTool(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  const child = spawn(NICE[0] as string, [...NICE.slice(1), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  attackers.add(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(kill);
      attackers.delete(child);
      resolve(out);
    });
  });
}

export function stopAttackers(): void {
  for (const c of attackers) c.kill('SIGKILL');
  attackers.clear();
}

export interface Sample {
  /** Wall-clock send time (performance.timeOrigin + performance.now() of the probe), ms. */
  at: number;
  status: number;
  ms: number;
}

export interface Probe {
  /**
   * Samples sent between `from` and `to` (performance.now() times of this process); `slowest` are the five
   * slowest as [ms after `from`, latency ms], to tell a burst from a spread.
   */
  window(from: number, to: number): { sent: number; ok: number; p99: number; failures: string[]; slowest: Array<[number, number]> };
  stop(): Promise<void>;
  /** Whether the probe runs at the raised priority of the system under test. */
  readonly prioritized: boolean;
}

/**
 * The well-behaved client: one GET every `intervalMs` to `base` with `Host: host` from `localAddress`, each
 * with a 2 s timeout, in a process of its own (test/fixtures/attacks/probe.mjs) at the raised priority of
 * the system under test, so that its latencies are the gateway's and not the test runner's.
 */
export function startProbe(base: string, host: string, localAddress = '127.0.0.2', intervalMs = 20): Probe {
  const child = spawn(process.execPath, [`${ATTACKS}probe.mjs`, base, host, localAddress, String(intervalMs)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    detached: true,
  });
  const prioritized = child.pid !== undefined && raisePriority(child.pid);
  const samples: Sample[] = [];
  let rest = '';
  child.stdout?.on('data', (d: Buffer) => {
    const lines = (rest + d.toString()).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) {
      const [at, status, ms] = line.split(' ').map(Number);
      samples.push({ at: at as number, status: status as number, ms: ms as number });
    }
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const wall = (t: number) => performance.timeOrigin + t;
  return {
    prioritized,
    window(from, to) {
      const inside = samples.filter((s) => s.at >= wall(from) && s.at < wall(to));
      const ms = inside.map((s) => (s.status === 200 ? s.ms : Number.POSITIVE_INFINITY)).sort((a, b) => a - b);
      const p99 = ms.length ? (ms[Math.min(ms.length - 1, Math.ceil(ms.length * 0.99) - 1)] as number) : Number.NaN;
      const slowest = [...inside]
        .sort((a, b) => b.ms - a.ms)
        .slice(0, 5)
        .map((s): [number, number] => [Math.round(s.at - wall(from)), Math.round(s.ms)]);
      return {
        sent: inside.length,
        ok: inside.filter((s) => s.status === 200).length,
        p99,
        slowest,
        failures: inside.filter((s) => s.status !== 200).map((s) => (s.status === 0 ? 'error or timeout' : `status ${s.status}`)),
      };
    },
    async stop() {
      child.stdin?.end();
      const force = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(force);
    },
  };
}

/**
 * CPU time of a process's main thread and the time it waited for a core (run queue), in ms
 * (/proc/PID/task/PID/schedstat): a wait as long as the run means the machine, not the process, was busy.
 */
export function schedOf(pid: number): { runMs: number; waitMs: number } {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ').map(Number);
    return { runMs: (run as number) / 1e6, waitMs: (wait as number) / 1e6 };
  } catch {
    return { runMs: Number.NaN, waitMs: Number.NaN };
  }
}

/** Resident set size of a process, in bytes. */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** A metric's value from a Prometheus text exposition (0 when absent). */
export function metric(text: string, name: string, labels = ''): number {
  const prefix = labels ? `${name}{${labels}} ` : `${name} `;
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  return line ? Number(line.slice(prefix.length)) : 0;
}

export async function metricsOf(admin: string): Promise<string> {
  const res = await request(`${admin}/metrics`);
  return res.body.text();
}
