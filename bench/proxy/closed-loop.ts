/** Closed-loop runs, targets interleaved A B C … A B C … over the rounds, medians per target. */
import { checkInterrupted, oneLine } from '../lib/proc.js';
import type { Row } from '../lib/report.js';
import { aggregate } from '../lib/stats.js';
import { type Lineup, pidsAlive } from './lineup.js';
import type { LoadGen } from './loadgen.js';
import type { Scenario } from './scenarios.js';
import type { LoadResult } from './types.js';

export interface InterleaveOptions {
  rounds: number;
  durationSec: number;
  warmupSec: number;
  connections: number;
  tag: string;
}

export function fmtRun(r: LoadResult): string {
  const err = r.errors + r.non2xx;
  return `${Math.round(r.rps)} req/s, p50 ${r.latency.p50.toFixed(2)} ms, p99 ${r.latency.p99.toFixed(2)} ms${err ? `, ${err} failed` : ''}`;
}

export async function interleave(
  lineup: Lineup,
  scenario: Scenario,
  loadgen: LoadGen,
  o: InterleaveOptions,
  log: (msg: string) => void,
): Promise<Row[]> {
  const runs = new Map<string, LoadResult[]>();
  const failed = new Map<string, string>();
  for (const e of lineup.entries) if (e.error) failed.set(e.spec.id, e.error);
  const live = () => lineup.entries.filter((e) => e.running && !failed.has(e.spec.id));

  const once = async (id: string, url: string, pids: number[], durationSec: number): Promise<LoadResult | undefined> => {
    checkInterrupted();
    try {
      const r = await loadgen.closedLoop({ url, host: lineup.host, scenario, connections: o.connections, durationSec });
      if (!pidsAlive(pids)) throw new Error('target process died during the run');
      if (r.requests === 0) throw new Error('no request completed');
      return r;
    } catch (err) {
      checkInterrupted();
      failed.set(id, oneLine(err));
      log(`  ${id}: ${failed.get(id)}`);
      return undefined;
    }
  };

  if (o.warmupSec > 0) {
    log(`[${o.tag} ${scenario.id}] warm-up ${o.warmupSec} s per target`);
    for (const e of live()) await once(e.spec.id, e.running?.url ?? '', e.running?.pids ?? [], o.warmupSec);
  }
  for (let round = 1; round <= o.rounds; round++) {
    for (const e of live()) {
      const r = await once(e.spec.id, e.running?.url ?? '', e.running?.pids ?? [], o.durationSec);
      if (!r) continue;
      runs.set(e.spec.id, [...(runs.get(e.spec.id) ?? []), r]);
      log(`[${o.tag} ${scenario.id} ${round}/${o.rounds}] ${e.spec.id.padEnd(10)} ${fmtRun(r)}`);
    }
  }
  return lineup.entries.map((e) => {
    const rs = runs.get(e.spec.id);
    const error = failed.get(e.spec.id);
    return {
      id: e.spec.id,
      label: e.spec.label,
      ...(rs?.length ? { agg: aggregate(rs) } : {}),
      ...(error ? { error } : {}),
    };
  });
}
