/** Fixed-rate runs (open loop, rate-runner.ts): latency at a load every target can sustain. */
import { checkInterrupted, oneLine } from '../lib/proc.js';
import type { Row } from '../lib/report.js';
import { aggregate } from '../lib/stats.js';
import { fmtRun } from './closed-loop.js';
import { type Lineup, pidsAlive } from './lineup.js';
import { runFixedRate } from './rate.js';
import type { Scenario } from './scenarios.js';
import type { LoadResult } from './types.js';

export async function fixedRate(
  lineup: Lineup,
  scenario: Scenario,
  o: {
    rate: number;
    rounds: number;
    durationSec: number;
    warmupSec: number;
    connections: number;
    cpus: string | undefined;
  },
  log: (msg: string) => void,
): Promise<Row[]> {
  const rows: Row[] = [];
  const runs = new Map<string, LoadResult[]>();
  const failed = new Map<string, string>();
  for (let round = 1; round <= o.rounds; round++) {
    for (const e of lineup.entries) {
      if (!e.running || e.error || failed.has(e.spec.id)) continue;
      checkInterrupted();
      try {
        const r = await runFixedRate({
          url: e.running.url,
          host: lineup.host,
          scenario,
          connections: o.connections,
          durationSec: o.durationSec,
          warmupSec: o.warmupSec,
          cpus: o.cpus,
          rate: o.rate,
        });
        if (!pidsAlive(e.running.pids)) throw new Error('target process died during the run');
        runs.set(e.spec.id, [...(runs.get(e.spec.id) ?? []), r]);
        log(`[rate ${o.rate}/s ${round}/${o.rounds}] ${e.spec.id.padEnd(10)} ${fmtRun(r)}`);
      } catch (err) {
        checkInterrupted();
        failed.set(e.spec.id, oneLine(err));
      }
    }
  }
  for (const e of lineup.entries) {
    const rs = runs.get(e.spec.id);
    const error = e.error ?? failed.get(e.spec.id);
    rows.push({
      id: e.spec.id,
      label: e.spec.label,
      ...(rs?.length ? { agg: aggregate(rs) } : {}),
      ...(error ? { error } : {}),
    });
  }
  return rows;
}
