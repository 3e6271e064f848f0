/** Parent side of rate-runner.ts: spawns it pinned to the load generator's CPU, parses its JSON. */
import { fileURLToPath } from 'node:url';
import { spawnProc, waitForLine } from '../lib/proc.js';
import type { RateConfig } from './rate-runner.js';
import type { Scenario } from './scenarios.js';
import type { LoadResult } from './types.js';

const RUNNER = fileURLToPath(new URL('./rate-runner.js', import.meta.url));

export interface RateLoad {
  url: string;
  host: string;
  scenario: Scenario;
  connections: number;
  rate: number;
  durationSec: number;
  /** Sent first, not recorded (default 1 s). */
  warmupSec?: number;
  cpus: string | undefined;
  recordErrors?: boolean;
  timeoutSec?: number;
}

export interface RateRun {
  /** Epoch ms (performance.timeOrigin-based) at which the schedule starts (warm-up included). */
  started: Promise<number>;
  result: Promise<LoadResult>;
}

export function startFixedRate(load: RateLoad): RateRun {
  const cfg: RateConfig = {
    origin: load.url,
    path: load.scenario.path,
    host: load.host,
    method: load.scenario.method,
    bodyBytes: load.scenario.requestBodyBytes,
    connections: load.connections,
    rate: load.rate,
    durationSec: load.durationSec,
    warmupSec: load.warmupSec ?? 1,
    timeoutSec: load.timeoutSec ?? 5,
    recordErrors: load.recordErrors ?? false,
  };
  const proc = spawnProc({
    name: 'rate-runner',
    cmd: process.execPath,
    args: [RUNNER, JSON.stringify(cfg)],
    cpus: load.cpus,
    captureStdout: true,
  });
  const started = waitForLine(proc, 'START ', 10_000).then((line) => Number(line.slice('START '.length)));
  started.catch(() => undefined); // the result promise reports the failure
  const result = proc.closed.then((info) => {
    const line = proc
      .stdout()
      .split('\n')
      .find((l) => l.startsWith('RATEJSON '));
    if (!line) throw new Error(`rate runner failed (${info.error?.message ?? `exit ${info.code}`}):\n${proc.tail()}`);
    return JSON.parse(line.slice('RATEJSON '.length)) as LoadResult;
  });
  result.catch(() => undefined); // marks it handled for callers that stop at `started`
  return { started, result };
}

export function runFixedRate(load: RateLoad): Promise<LoadResult> {
  return startFixedRate(load).result;
}
