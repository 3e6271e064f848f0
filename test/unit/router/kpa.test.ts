import { describe, expect, it } from 'vitest';
import { KPA_DEFAULTS, type KpaSettings, KpaState } from '../../../router/kpa.js';

const settings = (over: Partial<KpaSettings> = {}): KpaSettings => ({
  target: 100,
  utilization: KPA_DEFAULTS.utilization,
  stableWindowMs: 60_000,
  panicWindowMs: 6_000,
  panicThreshold: KPA_DEFAULTS.panicThreshold,
  maxScaleUpRate: KPA_DEFAULTS.maxScaleUpRate,
  maxScaleDownRate: KPA_DEFAULTS.maxScaleDownRate,
  idleMs: 30_000,
  min: 1,
  max: 20,
  ...over,
});

/**
 * Drives one instance second by second like the autoscaler does: a sample of the load, then a decision,
 * with the replicas it asked for ready by the next second.
 */
function run(state: KpaState, s: KpaSettings, from: number, seconds: number, load: (t: number) => number, ready: { n: number }) {
  const out: Array<{ t: number; desired: number; panic: boolean }> = [];
  for (let i = 1; i <= seconds; i++) {
    const t = from + i * 1000;
    const c = load(t);
    state.observe({ at: t, concurrency: c, active: c > 0 }, s);
    const d = state.decide(t, ready.n, s);
    out.push({ t, desired: d.desired, panic: d.panic });
    ready.n = d.desired;
  }
  return out;
}

describe('KPA arithmetic', () => {
  it('plans steady load at 70 % of the target per replica, without panic', () => {
    const s = settings();
    const state = new KpaState(0);
    const ready = { n: 1 };
    const steps = run(state, s, 0, 90, () => 280, ready);
    // 280 in flight at 70 per replica: 4 replicas. Reaching it from one replica is a panic (4 ≥ 2 × 1)…
    expect(steps.at(-1)).toMatchObject({ desired: 4 });
    // …which ends a stable window after the threshold was last crossed.
    expect(steps.at(-1)?.panic).toBe(false);
  });

  it('reacts to a 10× load step within the panic window and never scales down while panicking', () => {
    const s = settings();
    const state = new KpaState(0);
    const ready = { n: 1 };
    // One minute at 70 in flight: one replica, calm.
    const calm = run(state, s, 0, 60, () => 70, ready);
    expect(calm.at(-1)).toEqual({ t: 60_000, desired: 1, panic: false });
    // Then 700 in flight (10×).
    const step = run(state, s, 60_000, 10, () => 700, ready);
    expect(step[0]?.panic).toBe(true);
    expect(step[0]?.desired).toBeGreaterThan(1);
    // Within the 6 s panic window the count reaches what the new load needs: 700 / 70 = 10.
    const at6 = step.find((x) => x.t === 66_000);
    expect(at6?.desired).toBe(10);
    for (let i = 1; i < step.length; i++) expect(step[i]?.desired).toBeGreaterThanOrEqual(step[i - 1]?.desired as number);
    // The load falls back: no scale-down while panicking (a stable window after the last crossing)…
    const after = run(state, s, 70_000, 50, () => 70, ready);
    expect(after.every((x) => x.panic && x.desired === 10)).toBe(true);
    // …then down, at most halving per decision, to the stable window's need.
    const down = run(state, s, 120_000, 90, () => 70, ready);
    expect(down.at(-1)).toMatchObject({ desired: 1, panic: false });
    for (let i = 1; i < down.length; i++) expect(down[i]?.desired).toBeGreaterThanOrEqual(Math.floor((down[i - 1]?.desired as number) / 2));
  });

  it('scales to zero only after the idle time, and wakes at once for a held request', () => {
    const s = settings({ min: 0, idleMs: 5_000 });
    const state = new KpaState(0);
    const ready = { n: 1 };
    run(state, s, 0, 10, () => 20, ready);
    const quiet = run(state, s, 10_000, 8, () => 0, ready);
    // Four quiet seconds keep one replica; the fifth ends it, although the stable window still holds traffic.
    expect(quiet.slice(0, 4).map((x) => x.desired)).toEqual([1, 1, 1, 1]);
    expect(quiet.slice(4).every((x) => x.desired === 0)).toBe(true);
    // A request held by the activator is demand: it asks for a replica in the very next decision.
    state.observe({ at: 19_000, concurrency: 1, active: true }, s);
    expect(state.decide(19_000, 0, s).desired).toBe(1);
  });

  it('wakes a burst of held requests with enough replicas for it, within the bounds', () => {
    const s = settings({ min: 0, max: 8 });
    const state = new KpaState(0);
    state.observe({ at: 1_000, concurrency: 1_000, active: true }, s);
    const d = state.decide(1_000, 0, s);
    expect(d.panic).toBe(true);
    expect(d.desired).toBe(8);
    expect(d.reason).toMatch(/at most 8/);
  });

  it('keeps the minimum without traffic', () => {
    const s = settings({ min: 2 });
    const state = new KpaState(0);
    const ready = { n: 2 };
    expect(run(state, s, 0, 5, () => 0, ready).every((x) => x.desired === 2)).toBe(true);
  });
});
