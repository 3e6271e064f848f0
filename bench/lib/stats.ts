/** Percentiles, medians across rounds, ratios. */
import type { LoadResult, Percentiles } from '../proxy/types.js';

/** Nearest-rank percentile of an ascending-sorted sample. */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length - 1e-9); // tolerate 99.9/100 rounding up
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

export function percentilesOf(samples: Float64Array): Percentiles {
  const sorted = Float64Array.from(samples).sort();
  return {
    p50: percentileSorted(sorted, 50),
    p75: percentileSorted(sorted, 75),
    p90: percentileSorted(sorted, 90),
    p99: percentileSorted(sorted, 99),
    p999: percentileSorted(sorted, 99.9),
    p9999: percentileSorted(sorted, 99.99),
    max: sorted.length ? (sorted[sorted.length - 1] as number) : Number.NaN,
  };
}

export function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}

/** Aggregate of one target in one scenario over the rounds: medians of the per-round figures. */
export interface Aggregate {
  rounds: number;
  rps: number;
  rpsMin: number;
  rpsMax: number;
  latency: Percentiles;
  errors: number;
  non2xx: number;
  requests: number;
}

const KEYS: (keyof Percentiles)[] = ['p50', 'p75', 'p90', 'p99', 'p999', 'p9999', 'max'];

export function aggregate(runs: LoadResult[]): Aggregate {
  const latency = {} as Percentiles;
  for (const k of KEYS) latency[k] = median(runs.map((r) => r.latency[k]));
  const rps = runs.map((r) => r.rps);
  return {
    rounds: runs.length,
    rps: median(rps),
    rpsMin: Math.min(...rps),
    rpsMax: Math.max(...rps),
    latency,
    errors: runs.reduce((a, r) => a + r.errors, 0),
    non2xx: runs.reduce((a, r) => a + r.non2xx, 0),
    requests: runs.reduce((a, r) => a + r.requests, 0),
  };
}

/** a / b, NaN when either side is missing. */
export function ratio(a: number | undefined, b: number | undefined): number {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return Number.NaN;
  return a / b;
}

/**
 * CPU time a proxy adds per request, when the proxy's core is the bottleneck and the replicas
 * share that core: 1/rps(target) − 1/rps(direct), in µs.
 */
export function addedCpuMicros(rpsTarget: number, rpsDirect: number): number {
  if (!(rpsTarget > 0) || !(rpsDirect > 0)) return Number.NaN;
  return 1e6 / rpsTarget - 1e6 / rpsDirect;
}
