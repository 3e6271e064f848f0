/**
 * Failover: under a fixed-rate load, SIGKILL one replica and measure how many requests fail and
 * how long after the kill the last one failed. Each target starts fresh with 3 healthy replicas.
 */
import { checkInterrupted, oneLine, sleep } from '../lib/proc.js';
import type { FailoverRow } from '../lib/report.js';
import { validateTarget } from './lineup.js';
import { startFixedRate } from './rate.js';
import type { Scenario } from './scenarios.js';
import { Unavailable } from './targets.js';
import type { TargetContext, TargetSpec } from './types.js';
import type { Upstreams } from './upstream.js';

export interface FailoverOptions {
  rate: number;
  connections: number;
  durationSec: number;
  killAtSec: number;
  loadCpus: string | undefined;
}

/** Which replica is killed (not replica 0, which "direct" uses). */
const VICTIM = 1;

export function summarizeFailover(
  errorTimes: number[],
  killAt: number,
  endedAt: number,
): Pick<FailoverRow, 'failed' | 'failedBeforeKill' | 'recoveryMs' | 'recovered'> {
  const after = errorTimes.filter((t) => t >= killAt);
  const last = after.length ? Math.max(...after) : killAt;
  return {
    failed: after.length,
    failedBeforeKill: errorTimes.length - after.length,
    recoveryMs: last - killAt,
    recovered: after.length === 0 || endedAt - last > 1000,
  };
}

export async function failover(
  spec: TargetSpec,
  ctx: TargetContext,
  upstreams: Upstreams,
  scenario: Scenario,
  o: FailoverOptions,
  log: (msg: string) => void,
): Promise<FailoverRow> {
  checkInterrupted();
  await upstreams.heal();
  const row: FailoverRow = { id: spec.id, label: spec.label };
  let running: Awaited<ReturnType<TargetSpec['start']>> | undefined;
  try {
    running = await spec.start(ctx);
    const host = running.host ?? ctx.host;
    await validateTarget(running.url, host);
    const base = { url: running.url, host, scenario, connections: o.connections, cpus: o.loadCpus, rate: o.rate };
    const warmupSec = 1;
    const load = startFixedRate({ ...base, warmupSec, durationSec: o.durationSec, recordErrors: true, timeoutSec: 2 });
    const t0 = await load.started;
    await sleep(Math.max(0, t0 + (warmupSec + o.killAtSec) * 1000 - (performance.timeOrigin + performance.now())));
    const killAt = upstreams.kill(VICTIM);
    const r = await load.result;
    Object.assign(row, summarizeFailover(r.errorTimes ?? [], killAt, r.endedAt ?? killAt), {
      requests: r.requests,
      observedSec: ((r.endedAt ?? killAt) - killAt) / 1000,
    });
    log(
      `[failover] ${spec.id.padEnd(10)} ${row.failed} failed of ${r.requests}; last failure ${row.recoveryMs?.toFixed(0)} ms after the kill${row.recovered ? '' : ' (still failing at the end)'}`,
    );
  } catch (err) {
    checkInterrupted();
    row.error = err instanceof Unavailable ? `unavailable: ${oneLine(err)}` : oneLine(err);
    log(`[failover] ${spec.id}: ${row.error}`);
  } finally {
    await running?.stop().catch(() => undefined);
    await upstreams.heal();
  }
  return row;
}
