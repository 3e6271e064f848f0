/** The whole benchmark: replicas up, then the phases in order, everything stopped at the end. */
import os from 'node:os';
import { cpuPlan } from '../lib/cpu.js';
import { cpuBusyPercent, machineInfo } from '../lib/machine.js';
import { runMicroSections } from '../lib/micro-sections.js';
import type { BenchOptions } from '../lib/options.js';
import { checkInterrupted, makeTempDir, removeTempDirs } from '../lib/proc.js';
import type { BenchReport, FailoverRow } from '../lib/report.js';
import { interleave } from './closed-loop.js';
import { failover } from './failover.js';
import { fixedRate } from './fixed-rate.js';
import { loadGateway } from './gateway.js';
import { startLineup } from './lineup.js';
import { pickLoadGen } from './loadgen.js';
import { scenarioById } from './scenarios.js';
import { targetSpecs } from './targets.js';
import { Upstreams } from './upstream.js';

/** Host header sent when the gateway is not part of the run. */
export const DEFAULT_HOST = 'app.allegra.bench';
const REPLICAS = 3;

export async function runSuite(o: BenchOptions, log: (msg: string) => void): Promise<BenchReport> {
  const busyBeforePercent = await cpuBusyPercent(1000); // other work on the machine, before we add ours
  const t0 = Date.now();
  const cpu = cpuPlan();
  const tmpDir = makeTempDir('allegra-bench-');
  const loadgen = pickLoadGen(o.loadgen, cpu.loadgen, tmpDir);
  const notes: string[] = [];
  const usesGateway = [...o.targets, ...o.multiTargets, ...o.failoverTargets].some((t) => t.startsWith('gateway'));
  const gateway = usesGateway ? await loadGateway() : ({ ok: false, reason: 'not selected' } as const);
  if (usesGateway && !gateway.ok) {
    log(`gateway target unavailable: ${gateway.reason} — continuing without it`);
    notes.push(`The Allegra gateway target was unavailable: ${gateway.reason}`);
  }
  log(`CPU plan: ${cpu.description}`);
  log(`load generator: ${loadgen.kind}; temp dir ${tmpDir}`);

  const report: BenchReport = {
    options: o,
    machine: machineInfo(),
    cpu,
    loadgen: loadgen.kind,
    host: DEFAULT_HOST,
    startedAt: new Date(t0).toISOString(),
    elapsedSec: 0,
    loadAvg: { start: os.loadavg()[0] ?? 0, end: 0 },
    busyBeforePercent,
    targets: [],
    matrix: [],
    micro: [],
    notes,
  };
  const has = (p: string): boolean => (o.phases as string[]).includes(p);
  let phaseStart = Date.now();
  const phaseDone = (name: string): void => {
    log(`(${name} took ${Math.round((Date.now() - phaseStart) / 1000)} s)`);
    phaseStart = Date.now();
  };
  const small = scenarioById('small');

  log(`starting ${REPLICAS} upstream replicas…`);
  const upstreams = await Upstreams.start(REPLICAS, cpu.upstream);
  try {
    const ctx = { upstreams: upstreams.urls, cpus: cpu.proxy, workers: 1, tmpDir };

    if (has('matrix') || has('rate')) {
      log('starting targets (1 process / worker / thread each)…');
      const lineup = await startLineup(targetSpecs(o.targets, gateway, o.baseline), ctx, DEFAULT_HOST, log);
      report.host = lineup.host;
      report.targets = lineup.info();
      try {
        if (has('matrix')) {
          for (const [i, id] of o.scenarios.entries()) {
            const scenario = scenarioById(id);
            // Full runs warm every target up before each scenario; quicker runs only before the first.
            const warmupSec = i === 0 || o.mode === 'full' ? o.warmupSec : 0;
            const rows = await interleave(lineup, scenario, loadgen, { ...o, warmupSec, tag: 'matrix' }, log);
            report.matrix.push({ scenario, rows });
          }
          phaseDone('closed-loop matrix');
        }
        if (has('rate')) {
          const rows = await fixedRate(
            lineup,
            small,
            {
              rate: o.rate,
              rounds: o.rateRounds,
              durationSec: o.rateDurationSec,
              warmupSec: o.rateWarmupSec,
              connections: o.connections,
              cpus: cpu.loadgen,
            },
            log,
          );
          report.rate = { rate: o.rate, scenario: small, rows };
          phaseDone('fixed rate');
        }
      } finally {
        await lineup.stop();
      }
    }

    checkInterrupted();
    if (has('multi') && o.multiTargets.length) {
      log(`starting targets with ${cpu.multiWorkers} workers each on CPUs ${cpu.multi ?? '(unpinned)'}…`);
      const specs = targetSpecs(o.multiTargets, gateway, o.baseline).filter((s) => s.multiWorker || s.id === 'direct');
      const lineup = await startLineup(specs, { ...ctx, cpus: cpu.multi, workers: cpu.multiWorkers }, report.host, log);
      try {
        const rows = await interleave(lineup, small, loadgen, { ...o, tag: `${cpu.multiWorkers}w` }, log);
        report.multi = { workers: cpu.multiWorkers, cpus: cpu.multi, scenario: small, targets: lineup.info(), rows };
        phaseDone('multi-process');
      } finally {
        await lineup.stop();
      }
    }

    checkInterrupted();
    if (has('failover') && o.failoverTargets.length) {
      const rows: FailoverRow[] = [];
      for (const spec of targetSpecs(o.failoverTargets, gateway, o.baseline)) {
        rows.push(
          await failover(
            spec,
            { ...ctx, host: report.host },
            upstreams,
            small,
            {
              rate: o.rate,
              connections: o.connections,
              durationSec: o.failoverDurationSec,
              killAtSec: o.failoverKillAtSec,
              loadCpus: cpu.loadgen,
            },
            log,
          ),
        );
      }
      report.failover = { rate: o.rate, durationSec: o.failoverDurationSec, killAtSec: o.failoverKillAtSec, rows };
      phaseDone('failover');
    }
  } finally {
    await upstreams.stop();
  }

  checkInterrupted();
  if (has('micro')) {
    phaseStart = Date.now();
    report.micro = await runMicroSections(o.mode !== 'full', log);
    phaseDone('microbenchmarks');
  } else {
    report.micro = [];
  }
  removeTempDirs();
  report.elapsedSec = (Date.now() - t0) / 1000;
  report.loadAvg.end = os.loadavg()[0] ?? 0;
  return report;
}
