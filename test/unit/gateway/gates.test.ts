import { describe, expect, it } from 'vitest';
import { RetryBudget, RouteGate } from '../../../gateway/gates.js';
import { OutlierDetector } from '../../../gateway/outlier.js';
import { Balancer } from '../../../router/balancer.js';

describe('RouteGate', () => {
  it('admits up to the limit at once, queues the rest and hands slots over in order', async () => {
    const gate = new RouteGate();
    expect(gate.acquire('r', 2, 1_000)).toBe(true);
    expect(gate.acquire('r', 2, 1_000)).toBe(true);
    const third = gate.acquire('r', 2, 1_000);
    const fourth = gate.acquire('r', 2, 1_000);
    expect(third).toBeInstanceOf(Promise);
    gate.release('r');
    expect(await third).toBe(true);
    expect(gate.inFlight('r')).toBe(2);
    gate.release('r');
    expect(await fourth).toBe(true);
    gate.release('r');
    gate.release('r');
    expect(gate.inFlight('r')).toBe(0);
  });

  it('refuses a queued request when its deadline passes, and keeps routes independent', async () => {
    const gate = new RouteGate();
    expect(gate.acquire('a', 1, 50)).toBe(true);
    const waiting = gate.acquire('a', 1, 50);
    expect(gate.acquire('b', 1, 50)).toBe(true);
    expect(await waiting).toBe(false);
    // The timed-out waiter gave nothing back: releasing the holder empties the route.
    gate.release('a');
    expect(gate.inFlight('a')).toBe(0);
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
