/**
 * Child entry: open-loop, fixed-rate load generator (prints one `RATEJSON {...}` line).
 *   node rate-runner.js '<RateConfig JSON>'
 * Request i is due at t0 + i/rate. Every ~1 ms a timer sends the requests due before the next tick
 * on an undici Pool (N keep-alive connections; requests queue when all are busy). Latency runs from
 * min(due time, actual send) to the end of the response body: a request sent late because the
 * target (or a full pool) held things up is charged from its due time, as wrk2 does, so queueing
 * behind a stall is not hidden (no coordinated omission). No busy-spinning, so the generator leaves
 * its core mostly idle at moderate rates.
 * The first `warmupSec` of the schedule (JIT, connection set-up) is sent but not recorded.
 * autocannon's overallRate is not used: it is a per-connection budget per second, i.e. a full-speed
 * burst at the start of every second. */
import { Pool } from 'undici';
import { exitWithParent } from '../lib/child.js';
import { percentilesOf } from '../lib/stats.js';
import type { LoadResult } from './types.js';

export interface RateConfig {
  origin: string;
  path: string;
  host: string;
  method: 'GET' | 'POST';
  bodyBytes: number;
  connections: number;
  rate: number;
  durationSec: number;
  warmupSec: number;
  timeoutSec: number;
  recordErrors: boolean;
}

exitWithParent();
const cfg = JSON.parse(process.argv[2] ?? '{}') as RateConfig;
const now = (): number => performance.timeOrigin + performance.now();
const timeoutMs = cfg.timeoutSec * 1000;
const pool = new Pool(cfg.origin, {
  connections: cfg.connections,
  pipelining: 1,
  keepAliveTimeout: 60_000,
  headersTimeout: timeoutMs,
  bodyTimeout: timeoutMs,
});
const headers: Record<string, string> = { host: cfg.host };
const body = cfg.bodyBytes > 0 ? Buffer.alloc(cfg.bodyBytes, 'x') : null;
if (body) headers['content-type'] = 'application/octet-stream';

const warm = Math.round(cfg.rate * cfg.warmupSec);
const measured = Math.max(1, Math.round(cfg.rate * cfg.durationSec));
const total = warm + measured;
const latencies = new Float64Array(measured);
let done = 0;
let ok = 0;
let errors = 0;
let non2xx = 0;
const errorTimes: number[] = [];
const interval = 1000 / cfg.rate;

const fail = (): void => {
  if (cfg.recordErrors) errorTimes.push(now());
};

async function fire(due: number, record: boolean): Promise<void> {
  const from = Math.min(due, now()); // sent early (batched): from send; sent late: from due
  try {
    const res = await pool.request({ path: cfg.path, method: cfg.method, headers, body });
    await res.body.dump({ limit: Number.MAX_SAFE_INTEGER });
    if (record) latencies[ok++] = now() - from;
    if (res.statusCode < 200 || res.statusCode > 299) {
      if (record) non2xx++;
      fail();
    }
  } catch {
    if (record) errors++;
    fail();
  } finally {
    done++;
  }
}

const t0 = now() + 20;
let sent = 0;
process.stdout.write(`START ${t0}\n`);
const TICK_MS = 1;
const finished = new Promise<void>((resolve) => {
  const tick = (): void => {
    const horizon = now() + TICK_MS;
    while (sent < total && t0 + sent * interval < horizon) {
      void fire(t0 + sent * interval, sent >= warm).then(() => {
        if (done === total) resolve();
      });
      sent++;
    }
    if (sent < total) setTimeout(tick, TICK_MS);
  };
  setTimeout(tick, 0);
});

// Bounded: every request has a timeout; the whole run gets a hard deadline on top.
const deadline = new Promise<void>((resolve) => setTimeout(resolve, (cfg.warmupSec + cfg.durationSec) * 1000 + timeoutMs + 2000).unref());
await Promise.race([finished, deadline]);
const endedAt = now();
const startedAt = t0 + cfg.warmupSec * 1000;
const durationSec = (endedAt - startedAt) / 1000;
const result: LoadResult = {
  requests: ok,
  durationSec,
  rps: ok / durationSec,
  latency: percentilesOf(latencies.subarray(0, ok)),
  errors: errors + (total - done),
  non2xx,
  startedAt,
  endedAt,
  ...(cfg.recordErrors ? { errorTimes } : {}),
};
process.stdout.write(`RATEJSON ${JSON.stringify(result)}\n`);
process.exit(0);
