import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assignSlots } from '../../../router/slots.js';

describe('replica slot assignment', () => {
  it('is deterministic, order-independent and spreads slots evenly', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 9 }),
        fc.integer({ min: 1, max: 12 }),
        (members, replicas) => {
          const a = assignSlots('i-x', members, replicas);
          const b = assignSlots('i-x', [...members].reverse(), replicas);
          expect(b).toEqual(a);
          const counts = new Map<string, number>();
          for (const s of a) counts.set(s.nodeId, (counts.get(s.nodeId) ?? 0) + 1);
          expect(Math.max(...counts.values())).toBeLessThanOrEqual(Math.ceil(replicas / members.length));
          expect(a.map((s) => s.slot)).toEqual([...Array(replicas).keys()]);
        },
      ),
    );
  });

  it('keeps every slot where it was when the count changes (the autoscaler only adds or removes the last slots)', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 9 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 20 }),
        (members, a, b) => {
          const small = assignSlots('i-y', members, Math.min(a, b));
          const large = assignSlots('i-y', members, Math.max(a, b));
          expect(large.slice(0, small.length)).toEqual(small);
        },
      ),
    );
  });

  it('keeps most slots in place when a member leaves', () => {
    let kept = 0;
    let total = 0;
    for (let i = 0; i < 300; i++) {
      const members = ['n-a', 'n-b', 'n-c', 'n-d'];
      const before = assignSlots(`i-${i}`, members, 3);
      const gone = members[i % 4] as string;
      const after = assignSlots(
        `i-${i}`,
        members.filter((m) => m !== gone),
        3,
      );
      for (const s of before) {
        if (s.nodeId === gone) continue;
        total++;
        if (after[s.slot]?.nodeId === s.nodeId) kept++;
      }
    }
    // The old rank-based scheme kept about half; slots on surviving members should nearly all stay.
    expect(kept / total).toBeGreaterThan(0.8);
  });
});
