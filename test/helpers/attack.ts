/**
 * Tools for the attack suite: attackers run as child processes (their busy loops must not delay the
 * probe), a well-behaved probe that sends one GET every 20 ms from a loopback address of its own and
 * records each answer's status and latency, and the gateway's resident memory.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { agentFrom } from './clients.js';

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
  at: number;
  status: number;
  ms: number;
}

export interface Probe {
  /** Samples sent between `from` and `to` (performance.now() times). */
  window(from: number, to: number): { sent: number; ok: number; p99: number; failures: string[] };
  stop(): Promise<void>;
}

/** One GET every `intervalMs` to `base` with `Host: host`, from `localAddress`, each with a 2 s timeout. */
export function startProbe(base: string, host: string, localAddress = '127.0.0.2', intervalMs = 20): Probe {
  const agent = agentFrom(localAddress, { keepAliveTimeout: 30_000 });
  const samples: Sample[] = [];
  const failures: Array<{ at: number; why: string }> = [];
  const inFlight = new Set<Promise<void>>();
  const t0 = performance.now();
  let n = 0;
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    const at = performance.now();
    const p = request(`${base}/`, { headers: { host }, dispatcher: agent, headersTimeout: 2_000, bodyTimeout: 2_000 })
      .then(async (res) => {
        await res.body.dump();
        samples.push({ at, status: res.statusCode, ms: performance.now() - at });
        if (res.statusCode !== 200) failures.push({ at, why: `status ${res.statusCode}` });
      })
      .catch((err: Error) => {
        samples.push({ at, status: 0, ms: performance.now() - at });
        failures.push({ at, why: err.message });
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
    n++;
    // Fixed schedule: a slow answer does not delay the next probe.
    setTimeout(tick, Math.max(0, t0 + n * intervalMs - performance.now()));
  };
  tick();
  return {
    window(from, to) {
      const inside = samples.filter((s) => s.at >= from && s.at < to);
      const ms = inside.map((s) => (s.status === 200 ? s.ms : Number.POSITIVE_INFINITY)).sort((a, b) => a - b);
      const p99 = ms.length ? (ms[Math.min(ms.length - 1, Math.ceil(ms.length * 0.99) - 1)] as number) : Number.NaN;
      return {
        sent: inside.length,
        ok: inside.filter((s) => s.status === 200).length,
        p99,
        failures: failures.filter((f) => f.at >= from && f.at < to).map((f) => f.why),
      };
    },
    async stop() {
      stopped = true;
      await Promise.allSettled([...inFlight]);
      await agent.close();
    },
  };
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
