import { describe, expect, it } from 'vitest';
import { Balancer, type BalancerOptions } from '../../../router/balancer.js';

interface Replica {
  id: string;
  weight?: number;
}

/** Deterministic random numbers (mulberry32), so every run sees the same picks. */
function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Clock {
  t = 0;
  readonly now = () => this.t;
}

function setup(ids: string[], opts: BalancerOptions = {}, clock = new Clock()) {
  const balancer = new Balancer<Replica>({ random: seededRandom(1), now: clock.now, ...opts });
  balancer.setEndpoints(ids.map((id) => ({ id })));
  return { balancer, clock };
}

/**
 * Open-loop load: one request every `intervalMs`, each taking `latencyOf(id)` ms; completions are reported
 * through onEnd at their simulated time. Returns how many requests each endpoint received.
 */
function simulate(
  balancer: Balancer<Replica>,
  clock: Clock,
  opts: { requests: number; intervalMs: number; latencyOf: (id: string) => number; ok?: (id: string) => boolean },
): Map<string, number> {
  const counts = new Map<string, number>();
  const pending: { end: number; id: string; latency: number }[] = [];
  const start = clock.t;
  for (let r = 0; r < opts.requests; r++) {
    const t = start + r * opts.intervalMs;
    pending.sort((a, b) => a.end - b.end);
    while (pending.length > 0 && (pending[0] as { end: number }).end <= t) {
      const done = pending.shift() as { end: number; id: string; latency: number };
      clock.t = done.end;
      balancer.onEnd(done.id, done.latency, opts.ok?.(done.id) ?? true);
    }
    clock.t = t;
    const picked = balancer.pick();
    if (!picked) continue;
    counts.set(picked.id, (counts.get(picked.id) ?? 0) + 1);
    balancer.onStart(picked.id);
    const latency = opts.latencyOf(picked.id);
    pending.push({ end: t + latency, id: picked.id, latency });
  }
  return counts;
}

/** Sequential requests with nothing in flight at pick time: isolates sampling (weights, slow start). */
function sequential(balancer: Balancer<Replica>, clock: Clock, requests: number, stepMs: number, latencyMs = 10): Map<string, number> {
  const counts = new Map<string, number>();
  for (let r = 0; r < requests; r++) {
    clock.t += stepMs;
    const picked = balancer.pick();
    if (!picked) continue;
    counts.set(picked.id, (counts.get(picked.id) ?? 0) + 1);
    balancer.onStart(picked.id);
    balancer.onEnd(picked.id, latencyMs, true);
  }
  return counts;
}

const share = (counts: Map<string, number>, id: string) => (counts.get(id) ?? 0) / [...counts.values()].reduce((a, b) => a + b, 0);

describe('Balancer (P2C over peak-EWMA × load)', () => {
  it('sends measurably less traffic to a slow replica', () => {
    const ids = ['a', 'b', 'c', 'slow'];
    const slow = setup(ids);
    const counts = simulate(slow.balancer, slow.clock, { requests: 10_000, intervalMs: 2, latencyOf: (id) => (id === 'slow' ? 100 : 10) });
    expect(share(counts, 'slow')).toBeLessThan(0.08);

    // Control: the same load with a uniform latency spreads evenly, so the skew above is the latency's doing.
    const even = setup(ids);
    const control = simulate(even.balancer, even.clock, { requests: 10_000, intervalMs: 2, latencyOf: () => 10 });
    expect(share(control, 'slow')).toBeGreaterThan(0.2);
    expect(share(control, 'slow')).toBeLessThan(0.3);
  });

  it('balances by load when latencies are equal: a replica holding requests gets fewer', () => {
    const { balancer } = setup(['a', 'b', 'c']);
    for (let i = 0; i < 5; i++) balancer.onStart('a');
    const counts = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      const id = balancer.pick()?.id as string;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect(share(counts, 'a')).toBeLessThan(0.2);
  });

  it('sends nothing to an ejected replica, and takes it back when the ejection expires', () => {
    const { balancer, clock } = setup(['a', 'b', 'c', 'd'], { slowStartMs: 0 });
    balancer.eject('d', 5_000);
    expect(balancer.isEjected('d')).toBe(true);
    expect(
      balancer
        .unejected()
        .map((e) => e.id)
        .sort(),
    ).toEqual(['a', 'b', 'c']);
    const during = sequential(balancer, clock, 2000, 1);
    expect(during.get('d') ?? 0).toBe(0);
    clock.t = 10_000;
    expect(balancer.isEjected('d')).toBe(false);
    const after = sequential(balancer, clock, 2000, 1);
    expect(share(after, 'd')).toBeGreaterThan(0.15);
  });

  it('ignores ejections in panic (most replicas ejected) and honours them with panic disabled', () => {
    const panicking = setup(['a', 'b', 'c', 'd']);
    for (const id of ['a', 'b', 'c']) panicking.balancer.eject(id, 60_000);
    expect(panicking.balancer.panicking).toBe(true);
    const counts = sequential(panicking.balancer, panicking.clock, 4000, 1);
    for (const id of ['a', 'b', 'c', 'd']) expect(share(counts, id)).toBeGreaterThan(0.1);

    const strict = setup(['a', 'b', 'c', 'd'], { panicThreshold: 0 });
    for (const id of ['a', 'b', 'c']) strict.balancer.eject(id, 60_000);
    expect(strict.balancer.panicking).toBe(false);
    const only = sequential(strict.balancer, strict.clock, 1000, 1);
    expect(only.get('d')).toBe(1000);

    // Half ejected is not "most": no panic at the default threshold of 0.5.
    const half = setup(['a', 'b', 'c', 'd']);
    half.balancer.eject('a', 60_000);
    half.balancer.eject('b', 60_000);
    expect(half.balancer.panicking).toBe(false);
    const halfCounts = sequential(half.balancer, half.clock, 1000, 1);
    expect((halfCounts.get('a') ?? 0) + (halfCounts.get('b') ?? 0)).toBe(0);
  });

  it('ramps a newly added replica up with slow start', () => {
    const { balancer, clock } = setup(['a', 'b', 'c', 'd'], { slowStartMs: 10_000 });
    sequential(balancer, clock, 200, 1);
    const start = clock.t;
    balancer.setEndpoints(['a', 'b', 'c', 'd', 'new'].map((id) => ({ id })));
    // First second of the 10 s window: far below the fair 20%.
    const early = sequential(balancer, clock, 1000, 1);
    expect(share(early, 'new')).toBeLessThan(0.07);
    // Middle of the window: more than at the start, still below fair.
    clock.t = start + 5_000;
    const middle = sequential(balancer, clock, 1000, 1);
    expect(share(middle, 'new')).toBeGreaterThan(share(early, 'new'));
    // After the window: a fair share.
    clock.t = start + 20_000;
    const late = sequential(balancer, clock, 2000, 1);
    expect(share(late, 'new')).toBeGreaterThan(0.15);
    expect(share(late, 'new')).toBeLessThan(0.25);
  });

  it('puts a replica returning from ejection through slow start', () => {
    const { balancer, clock } = setup(['a', 'b', 'c', 'd'], { slowStartMs: 10_000 });
    balancer.eject('d', 1_000);
    clock.t = 1_000;
    const early = sequential(balancer, clock, 1000, 1);
    expect(share(early, 'd')).toBeLessThan(0.08);
  });

  it('does not slow-start the first set of endpoints', () => {
    const { balancer, clock } = setup(['a', 'b'], { slowStartMs: 10_000 });
    expect(balancer.stats('a')?.effectiveWeight).toBe(1);
    const counts = sequential(balancer, clock, 2000, 1);
    expect(share(counts, 'a')).toBeGreaterThan(0.4);
  });

  it('shares traffic in proportion to weights', () => {
    const clock = new Clock();
    const balancer = new Balancer<Replica>({ random: seededRandom(3), now: clock.now });
    balancer.setEndpoints([
      { id: 'heavy', weight: 3 },
      { id: 'light', weight: 1 },
    ]);
    const counts = sequential(balancer, clock, 8000, 1);
    expect(share(counts, 'heavy')).toBeGreaterThan(0.7);
    expect(share(counts, 'heavy')).toBeLessThan(0.8);
  });

  it('never picks an excluded replica, and returns undefined when all are excluded', () => {
    const { balancer } = setup(['a', 'b', 'c']);
    const exclude = new Set(['a', 'b']);
    for (let i = 0; i < 200; i++) expect(balancer.pick(exclude)?.id).toBe('c');
    expect(balancer.pick(new Set(['a', 'b', 'c']))).toBeUndefined();
    expect(new Balancer<Replica>().pick()).toBeUndefined();
  });

  it('keeps the statistics of replicas that stay across setEndpoints', () => {
    const { balancer } = setup(['a', 'b']);
    balancer.onStart('a');
    balancer.onStart('a');
    balancer.setEndpoints([{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
    expect(balancer.stats('a')?.inFlight).toBe(2);
    expect(balancer.size).toBe(3);
    balancer.setEndpoints([{ id: 'b' }, { id: 'c' }]);
    expect(balancer.stats('a')).toBeUndefined();
    balancer.setEndpoints([{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
    expect(balancer.stats('a')?.inFlight).toBe(0);
  });

  it('does not reward a replica for failing fast', () => {
    const { balancer, clock } = setup(['a', 'b', 'c', 'failing']);
    const counts = simulate(balancer, clock, {
      requests: 10_000,
      intervalMs: 2,
      latencyOf: (id) => (id === 'failing' ? 1 : 10),
      ok: (id) => id !== 'failing',
    });
    expect(share(counts, 'failing')).toBeLessThan(0.15);
    expect(balancer.stats('failing')?.consecutiveFailures).toBeGreaterThan(0);
  });

  it('forgets old slowness: an idle slow replica is probed again once its estimate decays', () => {
    const { balancer, clock } = setup(['a', 'b'], { decayMs: 1_000 });
    balancer.onStart('a');
    balancer.onEnd('a', 1_000, true);
    balancer.onStart('b');
    balancer.onEnd('b', 10, true);
    const soon = sequential(balancer, clock, 200, 1, 10);
    expect(soon.get('a') ?? 0).toBe(0);
    expect(balancer.stats('a')?.latencyMs).toBeGreaterThan(100);
    clock.t += 20_000;
    expect(balancer.stats('a')?.latencyMs).toBeLessThan(1);
    const later = sequential(balancer, clock, 10, 1, 10);
    expect(later.get('a') ?? 0).toBeGreaterThan(0);
  });
});
