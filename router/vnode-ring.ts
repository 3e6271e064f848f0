/**
 * A consistent-hashing ring of virtual nodes over 32-bit positions, with a bucket index so that finding
 * the successor of a hash is O(1) on average instead of a binary search.
 */
import { combine32, hash32 } from './hash.js';

/** Owner indices are packed below the 32-bit position in one float64 sort key: 2^32 × 2^20 < 2^53. */
const OWNER_BITS = 20;
const OWNER_SPAN = 2 ** OWNER_BITS;
export const MAX_RING_MEMBERS = OWNER_SPAN - 1;

const POSITION_SEED = 0x5bd1e995;
const STRIDE_SEED = 0x27d4eb2f;

/**
 * Position of virtual node `index` of the member whose two id hashes are `base` and `stride`.
 * Two members share a whole sequence of positions only if both 32-bit hashes collide.
 */
export function vnodePosition(base: number, stride: number, index: number): number {
  return combine32(base, (stride + Math.imul(index, 0x9e3779b9)) | 0);
}

export class VnodeRing {
  /** Number of virtual nodes on the ring. */
  readonly length: number;
  private readonly positions: Uint32Array;
  private readonly owners: Int32Array;
  /** buckets[b] = first ring index whose position's top bits are ≥ b; buckets[2^bits] = length. */
  private readonly buckets: Int32Array;
  private readonly shift: number;

  /**
   * @param memberIds members in a canonical order (callers sort them): equal positions are ordered by
   *   member index, which keeps the ring identical on every builder.
   * @param vnodeCounts number of virtual nodes of each member (same order as memberIds).
   */
  constructor(memberIds: readonly string[], vnodeCounts: ArrayLike<number>) {
    if (memberIds.length > MAX_RING_MEMBERS) throw new RangeError(`at most ${MAX_RING_MEMBERS} ring members`);
    let total = 0;
    for (let m = 0; m < memberIds.length; m++) total += vnodeCounts[m] as number;
    const packed = new Float64Array(total);
    let p = 0;
    for (let m = 0; m < memberIds.length; m++) {
      const id = memberIds[m] as string;
      const base = hash32(id, POSITION_SEED);
      const stride = hash32(id, STRIDE_SEED);
      const count = vnodeCounts[m] as number;
      for (let v = 0; v < count; v++) packed[p++] = vnodePosition(base, stride, v) * OWNER_SPAN + m;
    }
    packed.sort();
    this.length = total;
    this.positions = new Uint32Array(total);
    this.owners = new Int32Array(total);
    for (let i = 0; i < total; i++) {
      const key = packed[i] as number;
      const position = Math.floor(key / OWNER_SPAN);
      this.positions[i] = position;
      this.owners[i] = key - position * OWNER_SPAN;
    }
    // About one ring point per bucket keeps the scan after the bucket jump to one or two comparisons.
    const bits = Math.max(4, Math.min(20, Math.floor(Math.log2(Math.max(1, total)))));
    this.shift = 32 - bits;
    const bucketCount = 2 ** bits;
    this.buckets = new Int32Array(bucketCount + 1);
    let i = 0;
    for (let b = 0; b <= bucketCount; b++) {
      while (i < total && (this.positions[i] as number) >>> this.shift < b) i++;
      this.buckets[b] = i;
    }
  }

  /** Ring index of the first virtual node at or clockwise after `hash` (a uint32). -1 on an empty ring. */
  successor(hash: number): number {
    if (this.length === 0) return -1;
    const bucket = hash >>> this.shift;
    let i = this.buckets[bucket] as number;
    const end = this.buckets[bucket + 1] as number;
    while (i < end && (this.positions[i] as number) < hash) i++;
    return i === this.length ? 0 : i;
  }

  /** Member index owning ring index `i`. */
  ownerAt(i: number): number {
    return this.owners[i] as number;
  }

  positionAt(i: number): number {
    return this.positions[i] as number;
  }

  /** Next ring index clockwise. */
  next(i: number): number {
    return i + 1 === this.length ? 0 : i + 1;
  }

  /** Member index owning `hash` with no load bound: a plain consistent-hashing lookup. */
  ownerOf(hash: number): number {
    const i = this.successor(hash);
    return i < 0 ? -1 : (this.owners[i] as number);
  }
}
