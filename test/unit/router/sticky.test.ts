import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Balancer } from '../../../router/balancer.js';

interface Replica {
  id: string;
  weight?: number;
}

const replicas = (n: number, prefix = 'r') => Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}` }));
const sessionKeys = (n: number) => Array.from({ length: n }, (_, i) => `session-${i}-${(i * 2654435761) >>> 0}`);

function balancerWith(endpoints: Replica[], clock = { t: 0 }): Balancer<Replica> {
  const b = new Balancer<Replica>({ now: () => clock.t, random: Math.random });
  b.setEndpoints(endpoints);
  return b;
}

function targets(b: Balancer<Replica>, keys: string[]): (string | undefined)[] {
  return keys.map((k) => b.pickSticky(k)?.id);
}

describe('sticky sessions (weighted rendezvous over endpoints)', () => {
  it('maps a key to the same endpoint on every call and on every gateway, whatever the endpoint order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20 }), fc.array(fc.string(), { minLength: 1, maxLength: 50 }), (n, keys) => {
        const a = balancerWith(replicas(n));
        const b = balancerWith(replicas(n).reverse());
        expect(targets(a, keys)).toEqual(targets(b, keys));
        expect(targets(a, keys)).toEqual(targets(a, keys));
      }),
      { numRuns: 100 },
    );
  });

  it('moves about 1/(N+1) of the keys, all to the new endpoint, when one endpoint is added', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 12 }), (n) => {
        const keys = sessionKeys(6000);
        const b = balancerWith(replicas(n));
        const before = targets(b, keys);
        b.setEndpoints([...replicas(n), { id: 'added' }]);
        const after = targets(b, keys);
        let moved = 0;
        for (let i = 0; i < keys.length; i++) {
          if (after[i] === before[i]) continue;
          moved++;
          expect(after[i]).toBe('added');
        }
        const ideal = 1 / (n + 1);
        expect(moved / keys.length).toBeGreaterThan(ideal * 0.8);
        expect(moved / keys.length).toBeLessThan(ideal * 1.2);
      }),
      { numRuns: 10 },
    );
  });

  it('moves only the keys of a removed endpoint', () => {
    const keys = sessionKeys(5000);
    const b = balancerWith(replicas(6));
    const before = targets(b, keys);
    b.setEndpoints(replicas(6).filter((r) => r.id !== 'r-2'));
    const after = targets(b, keys);
    for (let i = 0; i < keys.length; i++) if (before[i] !== 'r-2') expect(after[i]).toBe(before[i]);
  });

  it('falls back to a normal pick while the sticky endpoint is ejected, and returns to it after', () => {
    const clock = { t: 0 };
    const b = balancerWith(replicas(4), clock);
    const key = 'user-42';
    const home = b.pickSticky(key)?.id as string;
    b.eject(home, 1_000);
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(b.pickSticky(key)?.id as string);
    expect(seen.has(home)).toBe(false);
    expect(seen.size).toBeGreaterThan(1);
    clock.t = 2_000;
    expect(b.pickSticky(key)?.id).toBe(home);
    // Excluding the home endpoint (a retry) also falls back.
    expect(b.pickSticky(key, new Set([home]))?.id).not.toBe(home);
    expect(b.stickyTarget(key)?.id).toBe(home);
  });

  it('gives weighted endpoints a proportional share of keys', () => {
    const b = balancerWith([
      { id: 'big', weight: 2 },
      { id: 'small-1', weight: 1 },
      { id: 'small-2', weight: 1 },
    ]);
    const keys = sessionKeys(8000);
    const share = targets(b, keys).filter((t) => t === 'big').length / keys.length;
    expect(share).toBeGreaterThan(0.46);
    expect(share).toBeLessThan(0.54);
  });

  it('spreads keys evenly over equal endpoints', () => {
    const b = balancerWith(replicas(5));
    const counts = new Map<string, number>();
    for (const t of targets(b, sessionKeys(10_000))) counts.set(t as string, (counts.get(t as string) ?? 0) + 1);
    for (const c of counts.values()) expect(Math.abs(c / 10_000 - 0.2)).toBeLessThan(0.03);
  });
});
