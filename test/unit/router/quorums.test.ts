import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fmix32 } from '../../../router/hash.js';
import { formQuorums, type NodeInfo, type Quorum, quorumId } from '../../../router/quorums.js';

const REGIONS = ['eu', 'us', 'ap', 'sa'];

function node(i: number, region = REGIONS[i % REGIONS.length] as string, capacity = 10): NodeInfo {
  return { id: `n-${i.toString().padStart(3, '0')}`, region, capacity };
}

function permute<T>(list: readonly T[], seed: number): T[] {
  return list
    .map((item, i) => ({ item, key: fmix32((i + 1) * 0x9e3779b1 + seed) }))
    .sort((a, b) => a.key - b.key)
    .map((x) => x.item);
}

/** node id → quorum id */
function membership(quorums: Quorum[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const q of quorums) for (const m of q.members) out.set(m, q.id);
  return out;
}

/** Nodes present in both that are no longer with the same co-members' quorum. */
function movedMembers(before: Quorum[], after: Quorum[]): number {
  const a = membership(before);
  const b = membership(after);
  let moved = 0;
  for (const [m, q] of a) if (b.has(m) && b.get(m) !== q) moved++;
  return moved;
}

function checkShape(quorums: Quorum[], nodes: NodeInfo[], size: number): void {
  const n = nodes.length;
  const all = quorums.flatMap((q) => q.members);
  expect(all.sort()).toEqual(nodes.map((x) => x.id).sort());
  if (n === 0) {
    expect(quorums).toEqual([]);
    return;
  }
  if (n < size) {
    expect(quorums).toHaveLength(1);
    return;
  }
  expect(quorums).toHaveLength(Math.floor(n / size));
  const sizes = quorums.map((q) => q.members.length);
  expect(Math.min(...sizes)).toBeGreaterThanOrEqual(size);
  expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
  expect(quorums.map((q) => q.id)).toEqual([...quorums.map((q) => q.id)].sort());
  for (const q of quorums) expect(q.members).toEqual([...q.members].sort());
}

const nodeArb = fc.record({
  id: fc.string({ minLength: 1, maxLength: 6 }),
  region: fc.constantFrom(...REGIONS),
  capacity: fc.integer({ min: 0, max: 64 }),
});
const nodesArb = fc.uniqueArray(nodeArb, { selector: (x) => x.id, maxLength: 40 });

describe('formQuorums', () => {
  it('gives the same quorums regardless of the order of nodes and previous quorums', () => {
    fc.assert(
      fc.property(nodesArb, nodesArb, fc.integer({ min: 1, max: 5 }), fc.integer(), (first, second, size, seed) => {
        const previous = formQuorums(first, [], size);
        const a = formQuorums(second, previous, size);
        const b = formQuorums(
          permute(second, seed),
          permute(previous, seed ^ 7).map((q) => ({ ...q, members: permute(q.members, seed) })),
          size,
        );
        expect(b).toEqual(a);
      }),
      { numRuns: 300 },
    );
  });

  it('puts every live node in exactly one quorum of Q to 2Q-1 members, or one quorum when n < Q', () => {
    fc.assert(
      fc.property(nodesArb, nodesArb, fc.integer({ min: 1, max: 5 }), (first, second, size) => {
        const previous = formQuorums(first, [], size);
        checkShape(previous, first, size);
        checkShape(formQuorums(second, previous, size), second, size);
      }),
      { numRuns: 300 },
    );
  });

  it('is a fixed point: recomputing from its own output changes nothing', () => {
    fc.assert(
      fc.property(nodesArb, nodesArb, fc.integer({ min: 1, max: 5 }), (first, second, size) => {
        const next = formQuorums(second, formQuorums(first, [], size), size);
        expect(formQuorums(second, next, size)).toEqual(next);
      }),
      { numRuns: 200 },
    );
  });

  it('moves at most Q-1 members on a join or a leave', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 60 }),
        fc.integer({ min: 2, max: 5 }),
        fc.array(fc.record({ join: fc.boolean(), pick: fc.nat() }), { minLength: 1, maxLength: 20 }),
        (initial, size, changes) => {
          let nodes = Array.from({ length: initial }, (_, i) => node(i));
          let quorums = formQuorums(nodes, [], size);
          let nextId = initial;
          for (const change of changes) {
            const nextNodes =
              change.join || nodes.length === 0 ? [...nodes, node(nextId++)] : nodes.filter((_, i) => i !== change.pick % nodes.length);
            const next = formQuorums(nextNodes, quorums, size);
            const moved = movedMembers(quorums, next);
            if (nextNodes.length > nodes.length) {
              expect(moved).toBeLessThanOrEqual(size - 1);
            } else {
              // One member refills the leaver's quorum, or the smallest quorum (fewer than Q left) dissolves.
              expect(moved).toBeLessThanOrEqual(Math.max(1, size - 1));
            }
            nodes = nextNodes;
            quorums = next;
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('moves nobody when a node leaves a quorum that stays at or above Q', () => {
    const nodes = Array.from({ length: 10 }, (_, i) => node(i));
    const quorums = formQuorums(nodes, [], 3); // sizes 4, 3, 3
    const big = quorums.find((q) => q.members.length === 4) as Quorum;
    const leaver = big.members[0] as string;
    const next = formQuorums(
      nodes.filter((n) => n.id !== leaver),
      quorums,
      3,
    );
    expect(movedMembers(quorums, next)).toBe(0);
    expect(next.map((q) => q.id).sort()).toEqual(quorums.map((q) => q.id).sort());
  });

  it('spreads a new quorum’s members across regions', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...REGIONS), { minLength: 3, maxLength: 40 }),
        fc.integer({ min: 2, max: 4 }),
        (regions, size) => {
          const nodes = regions.map((r, i) => node(i, r));
          const quorums = formQuorums(nodes, [], size);
          const k = quorums.length;
          const total = new Map<string, number>();
          for (const r of regions) total.set(r, (total.get(r) ?? 0) + 1);
          const regionOf = new Map(nodes.map((n) => [n.id, n.region]));
          for (const q of quorums) {
            const inQuorum = new Map<string, number>();
            for (const m of q.members) inQuorum.set(regionOf.get(m) as string, (inQuorum.get(regionOf.get(m) as string) ?? 0) + 1);
            // No region is packed into a quorum more than its share of the quorums requires.
            for (const [r, c] of inQuorum) expect(c).toBeLessThanOrEqual(Math.ceil((total.get(r) as number) / k));
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('gives each quorum three regions when three regions have enough nodes', () => {
    const nodes = [
      ...Array.from({ length: 4 }, (_, i) => node(i, 'eu')),
      ...Array.from({ length: 4 }, (_, i) => node(10 + i, 'us')),
      ...Array.from({ length: 4 }, (_, i) => node(20 + i, 'ap')),
    ];
    const regionOf = new Map(nodes.map((n) => [n.id, n.region]));
    for (const q of formQuorums(nodes, [], 3)) expect(new Set(q.members.map((m) => regionOf.get(m))).size).toBe(3);
  });

  it('refills a quorum with a node of a region it lacks', () => {
    const q1 = { id: 'q-1', members: ['n-001', 'n-002', 'n-003'] }; // eu, us, ap
    const q2 = { id: 'q-2', members: ['n-004', 'n-005', 'n-006'] }; // eu, us, ap
    // The ap member of q1 leaves; an eu node (smaller id) and an ap node arrive.
    const nodes = [node(1, 'eu'), node(2, 'us'), node(4, 'eu'), node(5, 'us'), node(6, 'ap'), node(7, 'eu'), node(8, 'ap')];
    const next = formQuorums(nodes, [q1, q2], 3);
    expect(next.find((x) => x.id === 'q-1')?.members).toEqual(['n-001', 'n-002', 'n-008']);
    expect(next.find((x) => x.id === 'q-2')?.members).toEqual(['n-004', 'n-005', 'n-006', 'n-007']);
  });

  it('gives up the member of the most repeated region when a quorum has a surplus', () => {
    // One quorum of 5 (n=5, Q=3); a sixth node arrives, so a second quorum is founded from the surplus.
    const five = [node(1, 'eu'), node(2, 'eu'), node(3, 'eu'), node(4, 'us'), node(5, 'ap')];
    const [q] = formQuorums(five, [], 3) as [Quorum];
    expect(q.members).toHaveLength(5);
    const next = formQuorums([...five, node(6, 'us')], [q], 3);
    const kept = next.find((x) => x.id === q.id) as Quorum;
    const regionOf = new Map([...five, node(6, 'us')].map((n) => [n.id, n.region]));
    // The kept quorum spans three regions: the surplus came out of eu.
    expect(new Set(kept.members.map((m) => regionOf.get(m))).size).toBe(3);
  });

  it('forms one quorum of everything with fewer than Q nodes, and none without nodes', () => {
    expect(formQuorums([node(1), node(2)], [], 3)).toEqual([{ id: quorumId(['n-001', 'n-002']), members: ['n-001', 'n-002'] }]);
    expect(formQuorums([], [{ id: 'q-old', members: ['n-001'] }], 3)).toEqual([]);
  });

  it('derives quorum ids from the founders, independent of order', () => {
    expect(quorumId(['b', 'a', 'c'])).toBe(quorumId(['c', 'b', 'a']));
    expect(quorumId(['a', 'b', 'c'])).not.toBe(quorumId(['a', 'b', 'd']));
    // Pinned: quorum ids are stored in the registry, so the hash behind them must never change.
    expect(quorumId(['b', 'a', 'c'])).toBe('q-22aeqyd71sf');
  });

  it('never reuses an existing quorum id for a new quorum', () => {
    // Founders of q1 moved away and came back as free nodes while q1 lives on with other members.
    const founders = [node(1), node(2), node(3)];
    const q1 = { id: quorumId(founders.map((n) => n.id)), members: ['n-004', 'n-005', 'n-006'] };
    const nodes = [...founders, node(4), node(5), node(6)];
    const next = formQuorums(nodes, [q1], 3);
    expect(new Set(next.map((q) => q.id)).size).toBe(next.length);
  });
});
