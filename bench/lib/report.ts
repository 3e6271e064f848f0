/** The data a run produces; rendered into RESULTS.md / latency.svg and dumped as results.json. */
import type { Scenario } from '../proxy/scenarios.js';
import type { CpuPlan } from './cpu.js';
import type { MachineInfo } from './machine.js';
import type { BenchOptions } from './options.js';
import type { Aggregate } from './stats.js';

export interface TargetInfo {
  id: string;
  label: string;
  detail?: string;
  /** Why the target is missing from the results (unavailable, failed to start, died…). */
  error?: string;
}

export interface Row {
  id: string;
  label: string;
  agg?: Aggregate;
  error?: string;
}

export interface MatrixSection {
  scenario: Scenario;
  rows: Row[];
}

export interface RateSection {
  rate: number;
  scenario: Scenario;
  rows: Row[];
}

export interface MultiSection {
  workers: number;
  cpus: string | undefined;
  scenario: Scenario;
  targets: TargetInfo[];
  rows: Row[];
}

export interface FailoverRow {
  id: string;
  label: string;
  error?: string;
  requests?: number;
  /** Failed requests (socket errors, timeouts, non-2xx) after the kill. */
  failed?: number;
  failedBeforeKill?: number;
  /** Time from the SIGKILL to the last failed request (0 when none failed). */
  recoveryMs?: number;
  /** False when requests were still failing in the last second of the run. */
  recovered?: boolean;
  observedSec?: number;
}

export interface MicroSection {
  name: string;
  markdown?: string;
  missing?: string;
}

export interface BenchReport {
  options: BenchOptions;
  machine: MachineInfo;
  cpu: CpuPlan;
  loadgen: string;
  host: string;
  startedAt: string;
  elapsedSec: number;
  /** 1-minute load average of the machine when the run started and ended (other work adds noise). */
  loadAvg: { start: number; end: number };
  /** % of all cores' time busy during the second before the harness started anything. */
  busyBeforePercent: number;
  targets: TargetInfo[];
  matrix: MatrixSection[];
  rate?: RateSection;
  multi?: MultiSection;
  failover?: { rate: number; durationSec: number; killAtSec: number; rows: FailoverRow[] };
  micro: MicroSection[];
  notes: string[];
}
