/**
 * String and integer hashes shared by placement, stickiness and the benchmarks. All are pure functions of
 * their input, so every gateway and agent computes the same values.
 */

/**
 * 53-bit hash: two 32-bit FNV-1a lanes over UTF-16 code units, finished with murmur3's fmix32.
 * Quorum ids are derived from it (see quorumId), so its output must never change.
 */
export function hash53(input: string, seed = 0): number {
  // Two 32-bit FNV-1a lanes with different offsets; combined they give 53 usable bits.
  let h1 = (0x811c9dc5 ^ seed) >>> 0;
  let h2 = (0x050c5d1f ^ Math.imul(seed, 0x9e3779b1)) >>> 0;
  for (let i = 0; i < input.length; i++) {
    const c = input.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ c, 0x01000193) >>> 0;
  }
  // Final avalanche (murmur3 fmix32) so that nearby inputs spread.
  h1 = fmix32(h1);
  h2 = fmix32(h2 ^ h1);
  return (h2 & 0x1fffff) * 0x100000000 + h1;
}

/** murmur3's 32-bit finalizer: a bijection on uint32 with full avalanche. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/**
 * 32-bit murmur3 over UTF-16 code units, two units per 32-bit block. About twice as fast as hash53 for
 * the short ids we hash on hot paths (ring positions, sticky keys), where 32 bits are enough.
 */
export function hash32(input: string, seed = 0): number {
  let h = seed | 0;
  const len = input.length;
  let i = 0;
  for (; i + 1 < len; i += 2) {
    let k = input.charCodeAt(i) | (input.charCodeAt(i + 1) << 16);
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  if (i < len) {
    let k = input.charCodeAt(i);
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
  }
  return fmix32(h ^ len);
}

/**
 * Mixes two 32-bit values into one well-distributed uint32. Not symmetric: combine32(a, b) and
 * combine32(b, a) differ, so (key, endpoint) and (endpoint, key) pairs do not collide systematically.
 */
export function combine32(a: number, b: number): number {
  return fmix32((Math.imul(a, 0x9e3779b1) + fmix32(b ^ 0x85ebca6b)) | 0);
}

/** Maps a uint32 hash to the open interval (0, 1), never 0 or 1, so `Math.log` of it is finite and negative. */
export function unitInterval(h32: number): number {
  return (h32 + 0.5) / 0x100000000;
}
