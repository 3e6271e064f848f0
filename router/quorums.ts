/**
 * Quorum formation: a pure function from the live nodes and the previous quorums to the next quorums.
 * Every node and gateway computes the same answer from the same registry state: the result depends on
 * the sets given, never on their order.
 *
 * Shape: with n ≥ Q live nodes there are floor(n / Q) quorums whose sizes differ by at most one (so each
 * has Q to 2Q − 1 members and no node idles); with 0 < n < Q there is one quorum of all of them.
 *
 * Minimal movement: a member stays in its quorum unless its quorum is dissolved (there are more quorums
 * than floor(n / Q)) or is above its target size. Dissolved first are the quorums with the fewest live
 * members; over-full quorums give up only their surplus. So one join moves at most Q − 1 members (the
 * surplus that, with the newcomer, founds a new quorum), and one leave moves at most one member (to
 * refill the leaver's quorum) or the fewer than Q members left in the one quorum it dissolves.
 *
 * Region spreading: a surplus member is taken from the quorum's most repeated region; a quorum that needs
 * a member takes a free node of a region it lacks; new quorums are dealt the free nodes round-robin,
 * grouped by region, so each region is spread over as many quorums as it can be.
 */
import { hash53 } from './hash.js';

export interface NodeInfo {
  id: string;
  capacity: number;
  region: string;
}

export interface Quorum {
  id: string;
  members: string[];
}

export function formQuorums(nodes: NodeInfo[], previous: Quorum[], size = 3): Quorum[] {
  const quorumSize = Math.max(1, Math.floor(size));
  const live = canonicalNodes(nodes);
  const n = live.size;
  if (n === 0) return [];
  const targetCount = n >= quorumSize ? Math.floor(n / quorumSize) : 1;

  // Previous quorums restricted to live members; a node listed twice stays in the first quorum by id.
  const claimed = new Set<string>();
  const keptIds = new Set<string>();
  let kept: Quorum[] = [];
  // Sorted by id, then by members, so even a malformed input with a repeated id is read in one order.
  const byId = [...previous].sort((a, b) => compare(a.id, b.id) || compare([...a.members].sort().join(), [...b.members].sort().join()));
  for (const q of byId) {
    if (keptIds.has(q.id)) continue;
    const members = [...new Set(q.members)].filter((m) => live.has(m) && !claimed.has(m)).sort(compare);
    for (const m of members) claimed.add(m);
    if (members.length > 0) {
      keptIds.add(q.id);
      kept.push({ id: q.id, members });
    }
  }

  // Too many quorums for the live nodes: dissolve the smallest, whose members move anyway.
  if (kept.length > targetCount) {
    const bySizeAsc = [...kept].sort((a, b) => a.members.length - b.members.length || compare(a.id, b.id));
    const dissolved = new Set(bySizeAsc.slice(0, kept.length - targetCount).map((q) => q.id));
    kept = kept.filter((q) => !dissolved.has(q.id));
  }

  // Target sizes: n split over targetCount quorums, the larger shares going to the quorums that are
  // already larger so that nobody has to move for them.
  const base = Math.floor(n / targetCount);
  let larger = n % targetCount;
  const target = new Map<string, number>();
  for (const q of [...kept].sort((a, b) => b.members.length - a.members.length || compare(a.id, b.id))) {
    target.set(q.id, base + (larger > 0 ? 1 : 0));
    if (larger > 0) larger--;
  }

  for (const q of kept) {
    const surplus = q.members.length - (target.get(q.id) as number);
    for (let i = 0; i < surplus; i++) q.members = without(q.members, surplusMember(q.members, live));
  }

  const assigned = new Set(kept.flatMap((q) => q.members));
  const free = [...live.values()].filter((node) => !assigned.has(node.id));
  fillQuorums(kept, target, free, live);

  const newCount = targetCount - kept.length;
  const result = [...kept, ...dealNewQuorums(free, newCount, new Set(kept.map((q) => q.id)))];
  for (const q of result) q.members.sort(compare);
  return result.sort((a, b) => compare(a.id, b.id));
}

/** A quorum's id is derived from its founding members, so two controllers founding it agree on the id. */
export function quorumId(founders: string[]): string {
  return `q-${hash53([...founders].sort().join(',')).toString(36)}`;
}

/** Dedupes nodes by id with an order-independent rule: the largest capacity, then the smallest region. */
function canonicalNodes(nodes: NodeInfo[]): Map<string, NodeInfo> {
  const byId = new Map<string, NodeInfo>();
  for (const node of nodes) {
    const seen = byId.get(node.id);
    if (!seen || node.capacity > seen.capacity || (node.capacity === seen.capacity && node.region < seen.region)) {
      byId.set(node.id, node);
    }
  }
  return byId;
}

/** The member to give up: from the most repeated region, then the smallest capacity, then the largest id. */
function surplusMember(members: string[], live: Map<string, NodeInfo>): string {
  const regionCount = countRegions(members, live);
  let worst = members[0] as string;
  for (const m of members) {
    const a = live.get(m) as NodeInfo;
    const b = live.get(worst) as NodeInfo;
    const byRegion = (regionCount.get(a.region) as number) - (regionCount.get(b.region) as number);
    if (byRegion > 0 || (byRegion === 0 && (a.capacity < b.capacity || (a.capacity === b.capacity && m > worst)))) worst = m;
  }
  return worst;
}

/**
 * Tops up existing quorums to their targets from `free` (mutated: taken nodes are removed), one member per
 * quorum per round so no quorum takes all the nodes of a scarce region. A quorum takes the free node
 * whose region it has least of; ties go to the region with the most free nodes (keeping scarce regions
 * for others), then to larger capacity, then to the smaller id.
 */
function fillQuorums(quorums: Quorum[], target: Map<string, number>, free: NodeInfo[], live: Map<string, NodeInfo>): void {
  const freeByRegion = new Map<string, number>();
  for (const node of free) freeByRegion.set(node.region, (freeByRegion.get(node.region) ?? 0) + 1);
  const ordered = [...quorums].sort((a, b) => compare(a.id, b.id));
  let needy = ordered.filter((q) => q.members.length < (target.get(q.id) as number));
  while (needy.length > 0 && free.length > 0) {
    for (const q of needy) {
      if (free.length === 0) break;
      const inQuorum = countRegions(q.members, live);
      let best = 0;
      for (let i = 1; i < free.length; i++) {
        if (betterCandidate(free[i] as NodeInfo, free[best] as NodeInfo, inQuorum, freeByRegion)) best = i;
      }
      const [taken] = free.splice(best, 1) as [NodeInfo];
      freeByRegion.set(taken.region, (freeByRegion.get(taken.region) as number) - 1);
      q.members.push(taken.id);
    }
    needy = needy.filter((q) => q.members.length < (target.get(q.id) as number));
  }
}

function betterCandidate(a: NodeInfo, b: NodeInfo, inQuorum: Map<string, number>, freeByRegion: Map<string, number>): boolean {
  const repeats = (inQuorum.get(a.region) ?? 0) - (inQuorum.get(b.region) ?? 0);
  if (repeats !== 0) return repeats < 0;
  const abundance = (freeByRegion.get(a.region) as number) - (freeByRegion.get(b.region) as number);
  if (abundance !== 0) return abundance > 0;
  if (a.capacity !== b.capacity) return a.capacity > b.capacity;
  return a.id < b.id;
}

/**
 * Founds `count` quorums from the free nodes by dealing them round-robin, ordered region by region
 * (most populous region first; within a region larger capacity first), so a region's nodes land in
 * different quorums and large nodes spread out. Sizes differ by at most one.
 */
function dealNewQuorums(free: NodeInfo[], count: number, takenIds: Set<string>): Quorum[] {
  if (count <= 0) return [];
  const byRegion = new Map<string, NodeInfo[]>();
  for (const node of free) {
    const list = byRegion.get(node.region);
    if (list) list.push(node);
    else byRegion.set(node.region, [node]);
  }
  const regions = [...byRegion.entries()].sort((a, b) => b[1].length - a[1].length || compare(a[0], b[0]));
  const dealt: string[][] = Array.from({ length: count }, () => []);
  let seat = 0;
  for (const [, list] of regions) {
    list.sort((a, b) => b.capacity - a.capacity || compare(a.id, b.id));
    for (const node of list) {
      (dealt[seat] as string[]).push(node.id);
      seat = (seat + 1) % count;
    }
  }
  const quorums: Quorum[] = [];
  for (const members of dealt) {
    if (members.length === 0) continue;
    let id = quorumId(members);
    // A dissolved quorum's founders may still be an existing quorum's id: salt until unique.
    for (let salt = 1; takenIds.has(id); salt++) id = quorumId([...members, `#${salt}`]);
    takenIds.add(id);
    quorums.push({ id, members });
  }
  return quorums;
}

function countRegions(members: string[], live: Map<string, NodeInfo>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const m of members) {
    const region = (live.get(m) as NodeInfo).region;
    counts.set(region, (counts.get(region) ?? 0) + 1);
  }
  return counts;
}

function without(list: string[], item: string): string[] {
  return list.filter((x) => x !== item);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
