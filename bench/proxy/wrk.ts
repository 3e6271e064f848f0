/**
 * wrk (C, epoll) as the closed-loop load generator: one thread, pinned, fixed connections and
 * duration. A Lua script sets method/body/Host and prints percentiles from wrk's µs histogram.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findBinary, spawnProc } from '../lib/proc.js';
import type { Scenario } from './scenarios.js';
import type { LoadResult } from './types.js';

export interface ClosedLoopLoad {
  url: string;
  host: string;
  scenario: Scenario;
  connections: number;
  durationSec: number;
  cpus: string | undefined;
  tmpDir: string;
}

export function wrkAvailable(): boolean {
  return findBinary('wrk') !== undefined;
}

export function wrkScript(scenario: Scenario, host: string): string {
  const lines = [`wrk.method = "${scenario.method}"`, `wrk.headers["Host"] = ${JSON.stringify(host)}`];
  if (scenario.requestBodyBytes > 0) {
    lines.push(`wrk.body = string.rep("x", ${scenario.requestBodyBytes})`);
    lines.push('wrk.headers["Content-Type"] = "application/octet-stream"');
  }
  const fields = [
    ['requests', 'summary.requests'],
    ['duration_us', 'summary.duration'],
    ['connect', 'e.connect'],
    ['read', 'e.read'],
    ['write', 'e.write'],
    ['status', 'e.status'],
    ['timeout', 'e.timeout'],
    ['p50', 'latency:percentile(50)'],
    ['p75', 'latency:percentile(75)'],
    ['p90', 'latency:percentile(90)'],
    ['p99', 'latency:percentile(99)'],
    ['p999', 'latency:percentile(99.9)'],
    ['p9999', 'latency:percentile(99.99)'],
    ['max', 'latency.max'],
  ];
  const fmt = fields.map(([k]) => `"${k}":%.1f`).join(',');
  lines.push(
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    `  io.write(string.format('WRKJSON {${fmt}}\\n', ${fields.map(([, v]) => v).join(', ')}))`,
    'end',
  );
  return `${lines.join('\n')}\n`;
}

interface WrkJson {
  requests: number;
  duration_us: number;
  connect: number;
  read: number;
  write: number;
  status: number;
  timeout: number;
  p50: number;
  p75: number;
  p90: number;
  p99: number;
  p999: number;
  p9999: number;
  max: number;
}

export async function runWrk(load: ClosedLoopLoad): Promise<LoadResult> {
  const bin = findBinary('wrk');
  if (!bin) throw new Error('wrk not installed');
  const script = join(load.tmpDir, `wrk-${load.scenario.id}.lua`);
  writeFileSync(script, wrkScript(load.scenario, load.host));
  const duration = Math.max(1, Math.round(load.durationSec));
  const proc = spawnProc({
    name: 'wrk',
    cmd: bin,
    args: ['-t1', `-c${load.connections}`, `-d${duration}s`, '--timeout', '5s', '-s', script, `${load.url}${load.scenario.path}`],
    cpus: load.cpus,
    captureStdout: true,
  });
  const info = await proc.closed;
  const line = proc
    .stdout()
    .split('\n')
    .find((l) => l.startsWith('WRKJSON '));
  if (!line) throw new Error(`wrk failed (${info.error?.message ?? `exit ${info.code}`}):\n${proc.tail()}`);
  const j = JSON.parse(line.slice('WRKJSON '.length)) as WrkJson;
  const durationSec = j.duration_us / 1e6;
  const ms = (us: number): number => us / 1000;
  return {
    requests: j.requests,
    durationSec,
    rps: j.requests / durationSec,
    latency: {
      p50: ms(j.p50),
      p75: ms(j.p75),
      p90: ms(j.p90),
      p99: ms(j.p99),
      p999: ms(j.p999),
      p9999: ms(j.p9999),
      max: ms(j.max),
    },
    errors: j.connect + j.read + j.write + j.timeout,
    non2xx: j.status,
  };
}
