/**
 * Instance → quorum placement: consistent hashing with bounded loads (Mirrokni, Thorup & Zadimoghaddam,
 * "Consistent Hashing with Bounded Loads", 2018; HAProxy's `hash-balance-factor`), capacity-aware.
 *
 * Every gateway and agent builds a Placement from the same registry state (quorums and the set of
 * instance ids) and therefore computes the same answer; nothing depends on input order.
 *
 * How an assignment is computed, for the known instance ids, at construction:
 * 1. Each quorum gets virtual nodes in proportion to its capacity, and a load bound of about
 *    c × instances × capacity / totalCapacity, never above its ceiling (see computeBounds).
 * 2. Each instance's primary quorum is the owner of the first virtual node clockwise of its hash.
 *    A quorum with more primaries than its bound keeps the ones closest to their virtual node; the
 *    farthest ones overflow. When a quorum leaves, the instances its successors inherit lie *behind*
 *    their own on the ring, so they overflow rather than displace instances that were already there
 *    (it matters when bounds barely change: at 1k quorums × 100 instances it cuts the collateral
 *    movement of a leave from 0.35 to 0.26 of the ideal).
 * 3. Overflowing instances walk clockwise to the first quorum below its bound; the two phases keep an
 *    overflowing instance from ever displacing a primary one, so overflow does not cascade.
 * quorumOf is then a Map lookup. An id that was not known at construction walks clockwise from its hash
 * to the first quorum below its bound (loads as computed at construction), so it is deterministic too.
 */
import { hash32 } from './hash.js';
import { VnodeRing } from './vnode-ring.js';

export interface QuorumWeight {
  id: string;
  /** Relative capacity; a quorum with twice the capacity receives about twice the instances. */
  capacity: number;
}

export interface PlacementOptions {
  /** Bounded-load factor c: no quorum holds more than ceil(c × capacity share × instances). Default 1.10; values below 1 count as 1. */
  balanceFactor?: number;
  /**
   * Virtual nodes of a quorum of average capacity (others get proportionally more or fewer). Every
   * builder must use the same value. Default 512: see bench/hashing.ts for the trade-off.
   */
  vnodesPerQuorum?: number;
}

export const DEFAULT_BALANCE_FACTOR = 1.1;
export const DEFAULT_VNODES_PER_QUORUM = 512;
/** Caps the ring size of one very large quorum relative to the average. */
const MAX_VNODE_MULTIPLE = 16;

/** Seed of instance hashes; distinct from the ring's seeds so key and vnode hashes are independent. */
const INSTANCE_SEED = 0x3c6ef372;
/** Seed of each quorum's rounding offset (see computeBounds). */
const BOUND_SEED = 0x7f4a7c15;

export class Placement {
  readonly balanceFactor: number;
  /** Quorum ids with positive capacity, sorted: index i is quorum i everywhere below. */
  private readonly ids: string[];
  private readonly indexById = new Map<string, number>();
  private readonly bounds: Int32Array;
  private readonly loads: Int32Array;
  private readonly ring: VnodeRing;
  /** instance id → quorum index, for the ids known at construction. */
  private readonly assignment = new Map<string, number>();

  constructor(quorums: QuorumWeight[], instanceIds: Iterable<string> = [], opts: PlacementOptions = {}) {
    this.balanceFactor = Math.max(1, opts.balanceFactor ?? DEFAULT_BALANCE_FACTOR);
    const vnodesPerQuorum = Math.max(1, Math.round(opts.vnodesPerQuorum ?? DEFAULT_VNODES_PER_QUORUM));

    const capacityById = canonicalQuorums(quorums);
    this.ids = [...capacityById.keys()].sort();
    const n = this.ids.length;
    const capacities = new Float64Array(n);
    let totalCapacity = 0;
    for (let q = 0; q < n; q++) {
      const id = this.ids[q] as string;
      this.indexById.set(id, q);
      capacities[q] = capacityById.get(id) as number;
      // Summed in sorted order so floating-point rounding is the same on every builder.
      totalCapacity += capacities[q] as number;
    }

    // Virtual nodes proportional to capacity relative to the mean. Equal capacities give every quorum the
    // same count, so a join or leave never changes the other quorums' virtual nodes; with unequal ones, a
    // join or leave that shifts the mean adds or drops a few virtual nodes elsewhere (some extra movement,
    // in proportion to how far the newcomer's capacity is from the mean).
    const vnodeCounts = new Int32Array(n);
    const meanCapacity = totalCapacity / Math.max(1, n);
    for (let q = 0; q < n; q++) {
      const share = (capacities[q] as number) / meanCapacity;
      vnodeCounts[q] = Math.max(1, Math.min(vnodesPerQuorum * MAX_VNODE_MULTIPLE, Math.round(vnodesPerQuorum * share)));
    }
    this.ring = ringFor(this.ids, vnodeCounts);

    const instances = [...new Set(instanceIds)];
    const m = instances.length;
    this.bounds = new Int32Array(n);
    this.loads = new Int32Array(n);
    computeBounds(this.bounds, this.ids, capacities, totalCapacity, this.balanceFactor * m, m);
    if (n > 0 && m > 0) this.assign(instances);
  }

  get size(): number {
    return this.ids.length;
  }

  /** Quorum ids taking part (positive capacity), sorted. */
  get quorumIds(): readonly string[] {
    return this.ids;
  }

  quorumOf(instanceId: string): string | undefined {
    const known = this.assignment.get(instanceId);
    if (known !== undefined) return this.ids[known];
    const q = this.boundedOwner(hash32(instanceId, INSTANCE_SEED));
    return q < 0 ? undefined : this.ids[q];
  }

  /** Number of known instances placed on the quorum (0 for an unknown quorum). */
  loadOf(quorumId: string): number {
    const q = this.indexById.get(quorumId);
    return q === undefined ? 0 : (this.loads[q] as number);
  }

  /** The most instances the quorum may hold: c × instances × capacity / total capacity, rounded (see computeBounds). */
  boundOf(quorumId: string): number {
    const q = this.indexById.get(quorumId);
    return q === undefined ? 0 : (this.bounds[q] as number);
  }

  /** Known instance ids placed on the quorum (O(instances); for agents computing what they own). */
  instancesOf(quorumId: string): string[] {
    const q = this.indexById.get(quorumId);
    const out: string[] = [];
    if (q === undefined) return out;
    for (const [instance, owner] of this.assignment) if (owner === q) out.push(instance);
    return out;
  }

  private assign(instances: string[]): void {
    const m = instances.length;
    const n = this.ids.length;
    const ring = this.ring;
    const hashes = new Uint32Array(m);
    const vnodeOf = new Int32Array(m);
    /** Clockwise distance from the instance's hash to its primary virtual node. */
    const distance = new Float64Array(m);
    const primaryCount = new Int32Array(n);
    for (let k = 0; k < m; k++) {
      const h = hash32(instances[k] as string, INSTANCE_SEED);
      const vi = ring.successor(h);
      hashes[k] = h;
      vnodeOf[k] = vi;
      distance[k] = (ring.positionAt(vi) - h) >>> 0;
      primaryCount[ring.ownerAt(vi)]++;
    }

    // Group instances by primary quorum (counting sort) so over-full quorums can rank theirs.
    const start = new Int32Array(n + 1);
    for (let q = 0; q < n; q++) start[q + 1] = (start[q] as number) + (primaryCount[q] as number);
    const fill = start.slice(0, n);
    const byQuorum = new Int32Array(m);
    for (let k = 0; k < m; k++) byQuorum[fill[ring.ownerAt(vnodeOf[k] as number)]++] = k;

    const closestFirst = (a: number, b: number): number =>
      (distance[a] as number) - (distance[b] as number) || compareStrings(instances[a] as string, instances[b] as string);
    const overflow: number[] = [];
    for (let q = 0; q < n; q++) {
      const group = byQuorum.subarray(start[q] as number, start[q + 1] as number);
      const bound = this.bounds[q] as number;
      if (group.length > bound) {
        group.sort(closestFirst);
        for (let j = bound; j < group.length; j++) overflow.push(group[j] as number);
      }
      const kept = Math.min(bound, group.length);
      for (let j = 0; j < kept; j++) this.assignment.set(instances[group[j] as number] as string, q);
      this.loads[q] = kept;
    }

    // Overflow walks clockwise in ring order of the instances, a canonical order every builder shares.
    overflow.sort(
      (a, b) => (hashes[a] as number) - (hashes[b] as number) || compareStrings(instances[a] as string, instances[b] as string),
    );
    for (const k of overflow) {
      let vi = ring.next(vnodeOf[k] as number);
      let q = ring.ownerAt(vi);
      // Terminates: computeBounds guarantees the bounds sum to at least m, so some quorum has room.
      while ((this.loads[q] as number) >= (this.bounds[q] as number)) {
        vi = ring.next(vi);
        q = ring.ownerAt(vi);
      }
      this.loads[q]++;
      this.assignment.set(instances[k] as string, q);
    }
  }

  /** First quorum clockwise of `hash` that is below its bound; the plain owner if all are full. */
  private boundedOwner(hash: number): number {
    const ring = this.ring;
    const first = ring.successor(hash);
    if (first < 0) return -1;
    let vi = first;
    for (let steps = 0; steps < ring.length; steps++) {
      const q = ring.ownerAt(vi);
      if ((this.loads[q] as number) < (this.bounds[q] as number)) return q;
      vi = ring.next(vi);
    }
    return ring.ownerAt(first);
  }
}

/**
 * The ring depends only on the quorums, which change far less often than the instance set (every create
 * or delete rebuilds the Placement), so the last ring is reused when the quorums are the same.
 */
let lastRing: { fingerprint: string; ring: VnodeRing } | undefined;

function ringFor(ids: readonly string[], vnodeCounts: Int32Array): VnodeRing {
  const fingerprint = JSON.stringify([ids, Array.from(vnodeCounts)]);
  if (lastRing?.fingerprint === fingerprint) return lastRing.ring;
  const ring = new VnodeRing(ids, vnodeCounts);
  lastRing = { fingerprint, ring };
  return ring;
}

/**
 * Per-quorum load bounds for a total budget of `budget` = c × m instances, split by capacity.
 *
 * The ideal bound B = budget × capacity / total is fractional. A join or leave shifts B by about B / N,
 * and every quorum at its bound whose integer bound changes must push out or take back instances that
 * have nothing to do with the change. Rounding every quorum the same way (ceil) makes all integer bounds
 * change together whenever B crosses an integer, and B often sits exactly on one (1.1 × 100 = 110): then
 * every leave raises every bound (~1× the ideal movement in collateral at 600 quorums × 100 instances).
 * Instead each quorum rounds with its own fixed offset u in [0, 1) derived from its id,
 * bound = floor(B + u): never above ceil(B), so the balance guarantee holds; on average B; and a shift of
 * ΔB < 1 changes the bounds of only a ΔB fraction of the quorums, whatever the value of B.
 * If the offsets leave fewer slots than instances (tiny inputs), fall back to ceil, which always fits.
 */
function computeBounds(
  bounds: Int32Array,
  ids: readonly string[],
  capacities: Float64Array,
  totalCapacity: number,
  budget: number,
  instances: number,
): void {
  let slots = 0;
  for (let q = 0; q < ids.length; q++) {
    const ideal = (budget * (capacities[q] as number)) / totalCapacity;
    // The -1e-9 keeps float error such as 1.1 × 100 = 110.00000000000001 from rounding up.
    const offset = hash32(ids[q] as string, BOUND_SEED) / 0x100000000;
    bounds[q] = Math.max(0, Math.min(Math.ceil(ideal - 1e-9), Math.floor(ideal + offset)));
    slots += bounds[q] as number;
  }
  if (slots >= instances && instances > 0) return;
  for (let q = 0; q < ids.length; q++) {
    bounds[q] = Math.max(1, Math.ceil((budget * (capacities[q] as number)) / totalCapacity - 1e-9));
  }
}

/** Dedupes quorums by id (keeping the largest capacity, an order-independent rule) and drops unusable ones. */
function canonicalQuorums(quorums: QuorumWeight[]): Map<string, number> {
  const capacityById = new Map<string, number>();
  for (const { id, capacity } of quorums) {
    if (!(capacity > 0) || !Number.isFinite(capacity)) continue;
    const seen = capacityById.get(id);
    if (seen === undefined || capacity > seen) capacityById.set(id, capacity);
  }
  return capacityById;
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
