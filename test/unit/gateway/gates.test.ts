import { describe, expect, it } from 'vitest';
import { RetryBudget, RouteGate } from '../../../gateway/gates.js';
import { OutlierDetector } from '../../../gateway/outlier.js';
import { Balancer } from '../../../router/balancer.js';

describe('RouteGate', () => {
  const limits = (limit: number, clientLimit = 100, queueLimit = 100) => ({ limit, clientLimit, queueLimit });
  /** Acquires and records the decision: 'ok', the refusal, or 'queued' while undecided. */
  const acquire = (gate: RouteGate, route: string, client: string, l: ReturnType<typeof limits>, waitMs = 1_000) => {
    const d: { v: string; handle: ReturnType<RouteGate['acquire']> } = { v: 'queued', handle: null };
    d.handle = gate.acquire(route, client, l, waitMs, (r) => (d.v = r ?? 'ok'));
    return d;
  };

  it('admits up to the limit at once, queues the rest and hands slots over in order', () => {
    const gate = new RouteGate();
    const l = limits(2);
    expect(acquire(gate, 'r', 'c', l).v).toBe('ok');
    expect(acquire(gate, 'r', 'c', l).v).toBe('ok');
    const third = acquire(gate, 'r', 'c', l);
    const fourth = acquire(gate, 'r', 'c', l);
    expect([third.v, fourth.v]).toEqual(['queued', 'queued']);
    gate.release('r', 'c');
    expect([third.v, fourth.v]).toEqual(['ok', 'queued']);
    expect(gate.inFlight('r')).toBe(2);
    gate.release('r', 'c');
    expect(fourth.v).toBe('ok');
    gate.release('r', 'c');
    gate.release('r', 'c');
    expect(gate.inFlight('r')).toBe(0);
  });

  it('refuses a queued request when its wait ends, and keeps routes independent', async () => {
    const gate = new RouteGate();
    expect(acquire(gate, 'a', 'c', limits(1), 50).v).toBe('ok');
    const waiting = acquire(gate, 'a', 'c', limits(1), 50);
    expect(acquire(gate, 'b', 'c', limits(1), 50).v).toBe('ok');
    await new Promise((r) => setTimeout(r, 80));
    expect(waiting.v).toBe('queue-timeout');
    // The timed-out waiter gave nothing back: releasing the holder empties the route.
    gate.release('a', 'c');
    expect(gate.inFlight('a')).toBe(0);
  });

  it('caps the share of one client, queued requests included, without affecting others', () => {
    const gate = new RouteGate();
    const l = limits(4, 2);
    expect([acquire(gate, 'r', 'greedy', l).v, acquire(gate, 'r', 'greedy', l).v]).toEqual(['ok', 'ok']);
    expect(acquire(gate, 'r', 'greedy', l).v).toBe('client-share');
    expect(acquire(gate, 'r', 'polite', l).v).toBe('ok');
    gate.release('r', 'greedy');
    expect(acquire(gate, 'r', 'greedy', l).v).toBe('ok');
  });

  it('refuses at once when the queue is full, and a cancelled wait frees its place and its share', () => {
    const gate = new RouteGate();
    const l = limits(1, 5, 1);
    acquire(gate, 'r', 'c', l);
    const queued = acquire(gate, 'r', 'c', l);
    expect(acquire(gate, 'r', 'd', l).v).toBe('queue-full');
    queued.handle?.cancel();
    expect(gate.queued('r')).toBe(0);
    const next = acquire(gate, 'r', 'd', l);
    expect(next.v).toBe('queued');
    gate.release('r', 'c');
    // The cancelled waiter never gets the slot; the next one does.
    expect([queued.v, next.v]).toEqual(['queued', 'ok']);
  });
});

describe('RetryBudget', () => {
  it('allows retries up to max(floor, ratio × active) and frees them on release', () => {
    const budget = new RetryBudget(0.2, 3);
    budget.active = 10;
    expect([budget.tryAcquire(), budget.tryAcquire(), budget.tryAcquire(), budget.tryAcquire()]).toEqual([true, true, true, false]);
    budget.release();
    expect(budget.tryAcquire()).toBe(true);
    budget.active = 100;
    let granted = 0;
    while (budget.tryAcquire()) granted++;
    // 20 in flight at most with 100 active: 3 already held, 17 more.
    expect(granted).toBe(17);
  });
});

describe('OutlierDetector', () => {
  const setup = () => {
    let now = 1_000_000;
    const balancer = new Balancer<{ id: string }>({ now: () => now, slowStartMs: 0 });
    balancer.setEndpoints([{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
    const ejected: Array<[string, number]> = [];
    const detector = new OutlierDetector({
      consecutiveFailures: 3,
      baseEjectionMs: 1_000,
      maxEjectionMs: 8_000,
      onEject: (id, ms) => ejected.push([id, ms]),
    });
    return { balancer, detector, ejected, advance: (ms: number) => (now += ms) };
  };

  it('ejects after consecutive failures, not after failures broken by a success', () => {
    const { balancer, detector, ejected } = setup();
    detector.report(balancer, 'a', 'error');
    detector.report(balancer, 'a', 'error');
    detector.report(balancer, 'a', 'ok');
    detector.report(balancer, 'a', 'error');
    detector.report(balancer, 'a', 'error');
    expect(ejected).toEqual([]);
    detector.report(balancer, 'a', 'error');
    expect(ejected).toEqual([['a', 1_000]]);
    expect(balancer.isEjected('a')).toBe(true);
  });

  it('ejects at once on a connection failure and backs off exponentially on repeat ejections', () => {
    const { balancer, detector, ejected, advance } = setup();
    detector.report(balancer, 'b', 'connect');
    advance(1_001);
    detector.report(balancer, 'b', 'connect');
    advance(2_001);
    detector.report(balancer, 'b', 'connect');
    advance(4_001);
    detector.report(balancer, 'b', 'connect');
    advance(8_001);
    detector.report(balancer, 'b', 'connect');
    expect(ejected.map(([, ms]) => ms)).toEqual([1_000, 2_000, 4_000, 8_000, 8_000]);
  });
});
