import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { combine32, hash32, hash53, unitInterval } from '../../../router/hash.js';
import { VnodeRing } from '../../../router/vnode-ring.js';

describe('hashes', () => {
  it('keep hash53 stable: quorum ids and replica slots are derived from it', () => {
    expect(hash53('hello')).toBe(3606658128115310);
    expect(hash53('q', 7)).toBe(4500325312275707);
  });

  it('spread hash32 and combine32 evenly over 32 buckets', () => {
    const chiSquare = (counts: number[], total: number) => {
      const expected = total / counts.length;
      return counts.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
    };
    const byHash = new Array(32).fill(0);
    const byCombine = new Array(32).fill(0);
    for (let i = 0; i < 32_000; i++) {
      byHash[hash32(`instance-${i}`) >>> 27]++;
      byCombine[combine32(i, 12345) >>> 27]++;
    }
    // 31 degrees of freedom: the 99.9th percentile of chi-square is about 61.
    expect(chiSquare(byHash, 32_000)).toBeLessThan(61);
    expect(chiSquare(byCombine, 32_000)).toBeLessThan(61);
  });

  it('map to the open unit interval', () => {
    expect(unitInterval(0)).toBeGreaterThan(0);
    expect(unitInterval(0xffffffff)).toBeLessThan(1);
  });
});

describe('VnodeRing', () => {
  it('finds the first virtual node at or after a hash, wrapping around, like a linear scan', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 1, max: 40 }),
        fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 1, maxLength: 50 }),
        (ids, vnodes, hashes) => {
          const sorted = [...ids].sort();
          const ring = new VnodeRing(sorted, new Int32Array(sorted.length).fill(vnodes));
          expect(ring.length).toBe(sorted.length * vnodes);
          const positions = Array.from({ length: ring.length }, (_, i) => ring.positionAt(i));
          for (let i = 1; i < positions.length; i++) expect(positions[i]).toBeGreaterThanOrEqual(positions[i - 1] as number);
          for (const h of [...hashes, 0, 0xffffffff, ...positions.slice(0, 5)]) {
            let expected = positions.findIndex((p) => p >= h);
            if (expected < 0) expected = 0;
            expect(ring.positionAt(ring.successor(h))).toBe(positions[expected]);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('is empty without members', () => {
    const ring = new VnodeRing([], new Int32Array(0));
    expect(ring.successor(123)).toBe(-1);
    expect(ring.ownerOf(123)).toBe(-1);
  });
});
