/** Command-line options and the full / --quick / --smoke presets. */
import { join } from 'node:path';
import type { LoadGenKind } from '../proxy/loadgen.js';
import { SCENARIOS, type ScenarioId, scenarioById } from '../proxy/scenarios.js';
import { repoRoot } from './paths.js';

export const PHASES = ['matrix', 'rate', 'multi', 'failover', 'micro'] as const;
export type Phase = (typeof PHASES)[number];

/** Interleaving order of the single-process targets (A B C … A B C …). */
export const ALL_TARGETS = [
  'direct',
  'gateway',
  'gateway-baseline',
  'gateway-nolog',
  'nginx',
  'haproxy',
  'node-min',
  'http-proxy',
  'fastify',
] as const;

export type Mode = 'full' | 'quick' | 'smoke';

export interface BenchOptions {
  mode: Mode;
  targets: string[];
  scenarios: ScenarioId[];
  phases: Phase[];
  rounds: number;
  durationSec: number;
  warmupSec: number;
  connections: number;
  /** Fixed-rate phase: overall req/s, duration and rounds per target. */
  rate: number;
  rateDurationSec: number;
  rateRounds: number;
  /** Sent at the rate before each fixed-rate run, not recorded. */
  rateWarmupSec: number;
  /** Failover phase: load duration, when the replica is killed, rate. */
  failoverDurationSec: number;
  failoverKillAtSec: number;
  failoverTargets: string[];
  multiTargets: string[];
  loadgen: LoadGenKind | undefined;
  /**
   * `--baseline DIR`: another build of the project (a checkout of an earlier commit, built), measured as
   * target `gateway-baseline` beside `gateway` in the same run, so a change is compared under the same load.
   */
  baseline: string | undefined;
  /** Where RESULTS.md, latency.svg and results.json are written. */
  outDir: string;
  /** Where results.json goes (bench/out for the full run, outDir otherwise). */
  jsonDir: string;
  command: string;
}

export const USAGE = `usage: node dist/bench/run.js [--quick | --smoke] [options]
  (npm run bench [-- options] builds first)
  --quick              ~1-minute run: 1 round of 1 s per target and scenario; results in bench/out/quick/
  --smoke              tiny run for the test: direct + node-min + gateway, small GET, 1 s; results in bench/out/smoke/
  --out DIR            write RESULTS.md, latency.svg, results.json to DIR
  --targets a,b        subset of ${ALL_TARGETS.join(',')}
  --scenarios a,b      subset of ${SCENARIOS.map((s) => s.id).join(',')}
  --phases a,b         subset of ${PHASES.join(',')}
  --rounds N           interleaved rounds (default 3)
  --duration S         seconds per measured run (default 3)
  --connections N      concurrent connections (default 50)
  --loadgen wrk|autocannon   closed-loop load generator (default: wrk when installed)
  --baseline DIR       also measure the gateway of another build (DIR/dist/cli/main.js) as gateway-baseline
`;

function preset(mode: Mode, root: string): Omit<BenchOptions, 'command' | 'loadgen' | 'baseline'> {
  const base = {
    mode,
    targets: ALL_TARGETS.filter((t) => t !== 'gateway-baseline'),
    scenarios: SCENARIOS.map((s) => s.id),
    phases: [...PHASES],
    connections: 50,
    rate: 5000,
    failoverTargets: ['gateway', 'nginx', 'haproxy'],
    multiTargets: ['direct', 'gateway', 'nginx', 'haproxy'],
  };
  switch (mode) {
    case 'full':
      return {
        ...base,
        rounds: 3,
        durationSec: 3,
        warmupSec: 1,
        rateDurationSec: 3,
        rateRounds: 3,
        rateWarmupSec: 1,
        failoverDurationSec: 8,
        failoverKillAtSec: 2,
        outDir: join(root, 'bench'),
        jsonDir: join(root, 'bench', 'out'),
      };
    case 'quick':
      return {
        ...base,
        rounds: 1,
        durationSec: 1,
        warmupSec: 1,
        rateDurationSec: 1,
        rateRounds: 1,
        rateWarmupSec: 0.5,
        failoverDurationSec: 2,
        failoverKillAtSec: 0.5,
        outDir: join(root, 'bench', 'out', 'quick'),
        jsonDir: join(root, 'bench', 'out', 'quick'),
      };
    case 'smoke':
      return {
        ...base,
        targets: ['direct', 'gateway', 'node-min'],
        scenarios: ['small'],
        phases: ['matrix', 'rate'],
        rounds: 1,
        durationSec: 1,
        warmupSec: 0,
        rate: 1000,
        rateDurationSec: 1,
        rateRounds: 1,
        rateWarmupSec: 0.5,
        failoverDurationSec: 3,
        failoverKillAtSec: 1,
        multiTargets: ['direct', 'gateway'],
        outDir: join(root, 'bench', 'out', 'smoke'),
        jsonDir: join(root, 'bench', 'out', 'smoke'),
      };
  }
}

function list(value: string | undefined, flag: string): string[] {
  if (!value) throw new Error(`${flag} needs a value`);
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function positive(value: string | undefined, flag: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag} needs a positive number`);
  return n;
}

export function parseOptions(argv: string[]): BenchOptions | 'help' {
  const root = repoRoot();
  const mode: Mode = argv.includes('--smoke') ? 'smoke' : argv.includes('--quick') ? 'quick' : 'full';
  const o: BenchOptions = {
    ...preset(mode, root),
    loadgen: undefined,
    baseline: undefined,
    command:
      process.env.npm_lifecycle_event === 'bench'
        ? `npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`
        : ['node', 'dist/bench/run.js', ...argv].join(' '),
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] as string;
    const next = (): string | undefined => argv[++i];
    switch (flag) {
      case '--quick':
      case '--smoke':
        break;
      case '-h':
      case '--help':
        return 'help';
      case '--out':
        o.outDir = next() ?? '';
        o.jsonDir = o.outDir;
        if (!o.outDir) throw new Error('--out needs a directory');
        break;
      case '--targets': {
        const t = list(next(), flag);
        for (const id of t) {
          if (!(ALL_TARGETS as readonly string[]).includes(id)) throw new Error(`unknown target "${id}"`);
        }
        o.targets = ALL_TARGETS.filter((id) => t.includes(id));
        o.failoverTargets = o.failoverTargets.filter((id) => t.includes(id));
        o.multiTargets = o.multiTargets.filter((id) => t.includes(id));
        break;
      }
      case '--scenarios':
        o.scenarios = list(next(), flag).map((id) => scenarioById(id).id);
        break;
      case '--phases': {
        const p = list(next(), flag);
        for (const id of p) if (!(PHASES as readonly string[]).includes(id)) throw new Error(`unknown phase "${id}"`);
        o.phases = PHASES.filter((id) => p.includes(id));
        break;
      }
      case '--rounds':
        o.rounds = Math.round(positive(next(), flag));
        o.rateRounds = o.rounds;
        break;
      case '--duration':
        o.durationSec = Math.max(1, Math.round(positive(next(), flag)));
        o.rateDurationSec = o.durationSec;
        break;
      case '--connections':
        o.connections = Math.round(positive(next(), flag));
        break;
      case '--loadgen': {
        const v = next();
        if (v !== 'wrk' && v !== 'autocannon') throw new Error('--loadgen must be wrk or autocannon');
        o.loadgen = v;
        break;
      }
      case '--baseline':
        o.baseline = next();
        if (!o.baseline) throw new Error('--baseline needs a directory');
        break;
      default:
        throw new Error(`unknown option ${flag}\n${USAGE}`);
    }
  }
  if (o.baseline) {
    if (!o.targets.includes('gateway-baseline') && o.targets.includes('gateway'))
      o.targets = ALL_TARGETS.filter((id) => id === 'gateway-baseline' || o.targets.includes(id));
  } else if (o.targets.includes('gateway-baseline')) throw new Error('target gateway-baseline needs --baseline DIR');
  return o;
}
