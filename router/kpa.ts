/**
 * Knative's KPA arithmetic for one instance, pure: concurrency samples in, desired replicas out.
 *
 * - Plan at 70 % of the target (`target × utilization` requests in flight per replica).
 * - Two averages of the observed concurrency: over the stable window (60 s) and the panic window (a tenth
 *   of it, 6 s). Desired = ceil(average / planned per replica) for each.
 * - Panic when the panic window asks for at least twice (200 %) the replicas that are ready; while
 *   panicking the count follows the panic window and never goes down; panic ends once a whole stable
 *   window has passed without crossing the threshold again.
 * - Per decision, at most 1000× up and 2× down (Knative's max scale-up and scale-down rates).
 * - Scale to zero (min 0): only after `idle` without any request; until then at least one replica stays.
 *   A request held for a sleeping instance counts as demand at once, so it wakes.
 */

export interface KpaSettings {
  /** Requests in flight per replica to aim for. */
  target: number;
  /** Fraction of the target to plan for (Knative's target utilization, 0.7). */
  utilization: number;
  stableWindowMs: number;
  panicWindowMs: number;
  /** Panic when the panic window's count reaches this many times the ready replicas (2 = 200 %). */
  panicThreshold: number;
  maxScaleUpRate: number;
  maxScaleDownRate: number;
  /** With min 0: time without traffic before the last replica goes. */
  idleMs: number;
  min: number;
  max: number;
}

export const KPA_DEFAULTS = {
  utilization: 0.7,
  stableWindowMs: 60_000,
  panicWindowFraction: 0.1,
  panicThreshold: 2,
  maxScaleUpRate: 1000,
  maxScaleDownRate: 2,
} as const;

/** One observation: concurrency averaged over the last tick, and whether any request was seen at all. */
export interface KpaSample {
  at: number;
  concurrency: number;
  /** A request arrived, was in flight or was held during the tick. */
  active: boolean;
}

export interface KpaDecision {
  desired: number;
  panic: boolean;
  stableConcurrency: number;
  panicConcurrency: number;
  reason: string;
}

/** The autoscaler's memory of one instance between decisions. */
export class KpaState {
  private samples: KpaSample[] = [];
  /** When the panic threshold was last crossed (panic lasts a stable window after it); null: not panicking. */
  private panicSince: number | null = null;
  /** The highest count asked for during the current panic: no scale-down while panicking. */
  private panicPeak = 0;
  /** The last request seen (or when the state began: a new instance is not idle from the start). */
  private lastActive: number;

  constructor(now: number) {
    this.lastActive = now;
  }

  observe(sample: KpaSample, settings: Pick<KpaSettings, 'stableWindowMs'>): void {
    this.samples.push(sample);
    if (sample.active) this.lastActive = Math.max(this.lastActive, sample.at);
    const horizon = sample.at - settings.stableWindowMs;
    let drop = 0;
    while (drop < this.samples.length && (this.samples[drop] as KpaSample).at <= horizon) drop++;
    if (drop > 0) this.samples = this.samples.slice(drop);
  }

  /** Average concurrency over the samples of the last `windowMs` (none yet: 0). */
  average(now: number, windowMs: number): number {
    let sum = 0;
    let n = 0;
    for (let i = this.samples.length - 1; i >= 0; i--) {
      const s = this.samples[i] as KpaSample;
      if (s.at <= now - windowMs) break;
      sum += s.concurrency;
      n++;
    }
    return n === 0 ? 0 : sum / n;
  }

  /** Desired replicas now, given how many are ready (serving). */
  decide(now: number, ready: number, s: KpaSettings): KpaDecision {
    const perReplica = Math.max(s.target * s.utilization, 0.01);
    const stable = this.average(now, s.stableWindowMs);
    const panicValue = this.average(now, s.panicWindowMs);
    const base = Math.max(1, ready);
    const maxUp = Math.ceil(s.maxScaleUpRate * base);
    const maxDown = Math.floor(base / s.maxScaleDownRate);
    const wantStable = Math.ceil(stable / perReplica - 1e-9);
    const wantPanic = Math.ceil(panicValue / perReplica - 1e-9);
    const rate = (n: number) => Math.min(Math.max(n, maxDown), maxUp);
    const stableCount = rate(wantStable);
    const panicCount = rate(wantPanic);

    const idleFor = now - this.lastActive;
    if (s.min === 0 && idleFor >= s.idleMs) {
      // Nothing for the whole idle time: the last replica goes, whatever older traffic the windows hold.
      this.panicSince = null;
      this.panicPeak = 0;
      return {
        desired: 0,
        panic: false,
        stableConcurrency: stable,
        panicConcurrency: panicValue,
        reason: `no traffic for ${Math.round(idleFor / 1000)} s: scaled to zero`,
      };
    }
    const over = wantPanic / base >= s.panicThreshold;
    if (over) this.panicSince = now;
    else if (this.panicSince !== null && now - this.panicSince >= s.stableWindowMs) {
      this.panicSince = null;
      this.panicPeak = 0;
    }
    const panic = this.panicSince !== null;
    let desired: number;
    let reason: string;
    if (panic) {
      // Never scale down while panicking: keep the largest count this panic has asked for.
      this.panicPeak = Math.max(this.panicPeak, panicCount, ready);
      desired = this.panicPeak;
      reason = `panic: ${round(panicValue)} in flight over ${s.panicWindowMs / 1000} s`;
    } else {
      desired = stableCount;
      reason = `${round(stable)} in flight over ${s.stableWindowMs / 1000} s at ${round(perReplica)} per replica`;
    }
    // Scale to zero only after the idle time: until then a scale-to-zero instance keeps one replica.
    if (desired === 0 && s.min === 0) {
      desired = 1;
      reason = `quiet for ${Math.round(idleFor / 1000)} s of the ${s.idleMs / 1000} s before scaling to zero`;
    }
    const bounded = Math.min(s.max, Math.max(s.min, desired));
    if (bounded !== desired) reason += bounded > desired ? ` (at least ${s.min})` : ` (at most ${s.max})`;
    return { desired: bounded, panic, stableConcurrency: stable, panicConcurrency: panicValue, reason };
  }
}

const round = (n: number) => Math.round(n * 10) / 10;
