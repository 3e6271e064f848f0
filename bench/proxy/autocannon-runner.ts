/**
 * Child entry: closed-loop load with autocannon (the fallback when wrk is not installed), run
 * programmatically; prints one JSON line (`ACJSON {...}`).
 *   node autocannon-runner.js '<RunnerConfig JSON>'
 * Latency is recorded from autocannon's per-response events (float ms): its own histogram has
 * 1 ms resolution.
 */

import type { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { exitWithParent } from '../lib/child.js';
import { percentilesOf } from '../lib/stats.js';
import type { LoadResult } from './types.js';

export interface RunnerConfig {
  url: string;
  host: string;
  method: 'GET' | 'POST';
  bodyBytes: number;
  connections: number;
  durationSec: number;
  timeoutSec: number;
}

interface AutocannonOptions {
  url: string;
  connections: number;
  duration: number;
  method: string;
  headers: Record<string, string>;
  body?: Buffer;
  timeout: number;
}
type Autocannon = (opts: AutocannonOptions, cb: (err: Error | null) => void) => EventEmitter;

exitWithParent();
const cfg = JSON.parse(process.argv[2] ?? '{}') as RunnerConfig;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
const now = (): number => performance.timeOrigin + performance.now();

let samples = new Float64Array(1 << 16);
let count = 0;
let errors = 0;
let non2xx = 0;
const record = (ms: number): void => {
  if (count === samples.length) {
    const bigger = new Float64Array(samples.length * 2);
    bigger.set(samples);
    samples = bigger;
  }
  samples[count++] = ms;
};

const headers: Record<string, string> = { host: cfg.host };
if (cfg.bodyBytes > 0) headers['content-type'] = 'application/octet-stream';
const startedAt = now();
const instance = autocannon(
  {
    url: cfg.url,
    connections: cfg.connections,
    duration: cfg.durationSec,
    method: cfg.method,
    headers,
    ...(cfg.bodyBytes > 0 ? { body: Buffer.alloc(cfg.bodyBytes, 'x') } : {}),
    timeout: cfg.timeoutSec,
  },
  (err) => {
    if (err) {
      process.stderr.write(`autocannon: ${err.message}\n`);
      process.exit(1);
    }
    const endedAt = now();
    const durationSec = (endedAt - startedAt) / 1000;
    const result: LoadResult = {
      requests: count,
      durationSec,
      rps: count / durationSec,
      latency: percentilesOf(samples.subarray(0, count)),
      errors,
      non2xx,
      startedAt,
      endedAt,
    };
    process.stdout.write(`ACJSON ${JSON.stringify(result)}\n`);
    process.exit(0);
  },
);
instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
  record(responseTime);
  if (statusCode < 200 || statusCode > 299) non2xx++;
});
instance.on('reqError', () => {
  errors++;
});
