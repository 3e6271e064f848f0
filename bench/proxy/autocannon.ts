/** Parent side of autocannon-runner.ts: spawns it pinned to the load generator's CPU, parses its JSON. */
import { fileURLToPath } from 'node:url';
import { spawnProc } from '../lib/proc.js';
import type { RunnerConfig } from './autocannon-runner.js';
import type { Scenario } from './scenarios.js';
import type { LoadResult } from './types.js';

const RUNNER = fileURLToPath(new URL('./autocannon-runner.js', import.meta.url));

export interface AutocannonLoad {
  url: string;
  host: string;
  scenario: Scenario;
  connections: number;
  durationSec: number;
  cpus: string | undefined;
  timeoutSec?: number;
}

export async function runAutocannon(load: AutocannonLoad): Promise<LoadResult> {
  const cfg: RunnerConfig = {
    url: `${load.url}${load.scenario.path}`,
    host: load.host,
    method: load.scenario.method,
    bodyBytes: load.scenario.requestBodyBytes,
    connections: load.connections,
    durationSec: load.durationSec,
    timeoutSec: load.timeoutSec ?? 5,
  };
  const proc = spawnProc({
    name: 'autocannon',
    cmd: process.execPath,
    args: [RUNNER, JSON.stringify(cfg)],
    cpus: load.cpus,
    captureStdout: true,
  });
  const info = await proc.closed;
  const line = proc
    .stdout()
    .split('\n')
    .find((l) => l.startsWith('ACJSON '));
  if (!line) throw new Error(`autocannon runner failed (${info.error?.message ?? `exit ${info.code}`}):\n${proc.tail()}`);
  return JSON.parse(line.slice('ACJSON '.length)) as LoadResult;
}
