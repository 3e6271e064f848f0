/**
 * Closed-loop load generator selection: wrk when installed (C, one pinned thread, far faster than
 * any target here, µs histogram), autocannon otherwise (or with --loadgen autocannon). Fixed-rate
 * and failover runs use rate-runner.ts (open loop) instead.
 */
import { runAutocannon } from './autocannon.js';
import type { Scenario } from './scenarios.js';
import type { LoadResult } from './types.js';
import { runWrk, wrkAvailable } from './wrk.js';

export type LoadGenKind = 'wrk' | 'autocannon';

export interface LoadGen {
  kind: LoadGenKind;
  closedLoop(opts: { url: string; host: string; scenario: Scenario; connections: number; durationSec: number }): Promise<LoadResult>;
}

export function pickLoadGen(wanted: LoadGenKind | undefined, cpus: string | undefined, tmpDir: string): LoadGen {
  const kind: LoadGenKind = wanted ?? (wrkAvailable() ? 'wrk' : 'autocannon');
  if (kind === 'wrk' && !wrkAvailable()) throw new Error('--loadgen wrk: wrk is not installed');
  return {
    kind,
    closedLoop: (o) => (kind === 'wrk' ? runWrk({ ...o, cpus, tmpDir }) : runAutocannon({ ...o, cpus })),
  };
}
