/**
 * Replica selection (the engine's "select" phase): a `Selector` picks one replica of a set for an attempt.
 * Two policies:
 *  - `p2cEwma`: power of two choices over cost = peak-EWMA latency × (in flight / weight + 1), candidates
 *    sampled in proportion to (slow-start) weight, near-equal costs a tie won by the first candidate (which
 *    alone yields proportional shares when nothing is in flight);
 *  - `sticky`: the route's session key (cookie or header) maps to one replica by weighted rendezvous
 *    hashing — adding one replica to N moves only ~1/(N+1) of the keys — and falls back to P2C when that
 *    replica is excluded, ejected or down.
 * `selectReplica` applies the caps on top: replicas at their in-flight cap, or at this client's share of
 * them, are skipped for this request. Allocation-free on the common path.
 */
import { combine32, hash32, unitInterval } from '../router/hash.js';
import type { Caps, Upstream, UpstreamSet } from './upstream.js';

export interface SelectContext {
  /** Replicas this request must not use (tried before, or found full). */
  exclude: ReadonlySet<string> | undefined;
  /** The request's session key, for routes with sticky sessions. */
  stickyKey: string | undefined;
}

export interface Selector {
  readonly name: string;
  pick(set: UpstreamSet, ctx: SelectContext): Upstream | undefined;
}

/** Costs within 5 % are a tie (noise and decay differences would otherwise decide, ignoring weights). */
const TIE_TOLERANCE = 0.05;
/** Weighted rejection sampling gives up after this many draws and scans instead. */
const MAX_SAMPLE_ATTEMPTS = 16;
const STICKY_SEED = 0x2545f491;

/** Draws an index from the pool with probability proportional to effective weight, skipping `avoid` and excluded ids. */
function sample(
  set: UpstreamSet,
  pool: Int32Array,
  size: number,
  exclude: ReadonlySet<string> | undefined,
  now: number,
  avoid: number,
): number {
  const random = set.random;
  for (let attempt = 0; attempt < MAX_SAMPLE_ATTEMPTS; attempt++) {
    const i = pool[Math.floor(random() * size)] as number;
    if (i === avoid) continue;
    const u = set.at(i);
    if (exclude?.has(u.id)) continue;
    if (set.uniformWeights && !(u.rampStart > Number.NEGATIVE_INFINITY)) return i;
    const w = set.effectiveWeight(u, now);
    if (w >= set.maxWeight || random() * set.maxWeight < w) return i;
  }
  const offset = Math.floor(random() * size);
  for (let k = 0; k < size; k++) {
    const i = pool[(offset + k) % size] as number;
    if (i === avoid || exclude?.has(set.at(i).id)) continue;
    return i;
  }
  return -1;
}

export const p2cEwma: Selector = {
  name: 'p2c-ewma',
  pick(set, ctx) {
    if (set.size === 0) return undefined;
    const now = set.now();
    const { indices, count } = set.pool(now);
    if (count === 0) return undefined;
    const a = sample(set, indices, count, ctx.exclude, now, -1);
    if (a < 0) return undefined;
    const first = set.at(a);
    if (count === 1) return first;
    const b = sample(set, indices, count, ctx.exclude, now, a);
    if (b < 0) return first;
    const second = set.at(b);
    // The first candidate was drawn by weight; it keeps the pick unless the second is clearly cheaper.
    return set.cost(second, now) * (1 + TIE_TOLERANCE) < set.cost(first, now) ? second : first;
  },
};

/**
 * The replica a session key maps to among the replicas in rotation by health (ejection is not considered:
 * an ejected target falls back to P2C and gets its sessions back when it returns), or undefined.
 */
export function stickyTarget(set: UpstreamSet, key: string): Upstream | undefined {
  const list = set.all;
  if (list.length === 0) return undefined;
  const keyHash = hash32(key, STICKY_SEED);
  let best: Upstream | undefined;
  let bestScore = Number.NEGATIVE_INFINITY;
  for (const u of list) {
    if (u.down) continue;
    const h = combine32(keyHash, u.idHash);
    // Weighted rendezvous (Schindelhauer & Schomaker): w / -ln(u) wins with probability w / Σw; with equal
    // weights the raw hash orders the same way and saves the logarithm.
    const score = set.uniformWeights ? h : u.weight / -Math.log(unitInterval(h));
    if (best === undefined || score > bestScore || (score === bestScore && u.id < best.id)) {
      bestScore = score;
      best = u;
    }
  }
  return best;
}

export const sticky: Selector = {
  name: 'sticky',
  pick(set, ctx) {
    if (ctx.stickyKey === undefined) return p2cEwma.pick(set, ctx);
    const target = stickyTarget(set, ctx.stickyKey);
    if (!target) return undefined;
    if (!ctx.exclude?.has(target.id) && set.eligible(target, set.now())) return target;
    return p2cEwma.pick(set, ctx);
  },
};

export interface StickyPolicy {
  stickyCookie: string | undefined;
  stickyHeader: string | undefined;
  stickyInsert?: boolean;
}

/**
 * The session of a request: its sticky key, and the cookie value the gateway mints for a client that has
 * none on a route whose cookie the gateway owns. A minted value is random; the replica it maps to (by the
 * sticky selector's rendezvous hashing) serves the request, and the answer sets the cookie, so the client's next
 * requests land there too — and when replicas are added, only the sessions that hash to the new ones move.
 */
export function sessionOf(
  headers: Record<string, string | string[] | undefined>,
  policy: StickyPolicy,
  mayMint = true,
): { key: string | undefined; minted: string | undefined } {
  const key = stickyKeyOf(headers, policy);
  if (key !== undefined || !mayMint || !policy.stickyInsert || !policy.stickyCookie) return { key, minted: undefined };
  const minted = randomSessionId();
  return { key: minted, minted };
}

/** 128 random bits, hex (Web Crypto: the engine runs on Workers too, where node:crypto is absent). */
function randomSessionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let hex = '';
  for (const b of bytes) hex += b.toString(16).padStart(2, '0');
  return hex;
}

/** The Set-Cookie of a minted session. */
export function sessionCookie(name: string, value: string): string {
  return `${name}=${value}; Path=/; HttpOnly; SameSite=Lax`;
}

/** The selector a route's policy asks for. */
export function selectorFor(policy: StickyPolicy): Selector {
  return policy.stickyCookie || policy.stickyHeader ? sticky : p2cEwma;
}

/** The session key of a request for a route with sticky sessions, if it carries one. */
export function stickyKeyOf(headers: Record<string, string | string[] | undefined>, policy: StickyPolicy): string | undefined {
  const { stickyHeader, stickyCookie } = policy;
  if (stickyHeader) {
    const v = headers[stickyHeader];
    if (typeof v === 'string' && v) return v;
  }
  if (stickyCookie) {
    const cookie = headers.cookie;
    if (typeof cookie === 'string') {
      for (const part of cookie.split(';')) {
        const eq = part.indexOf('=');
        if (eq > 0 && part.slice(0, eq).trim() === stickyCookie) return part.slice(eq + 1).trim();
      }
    }
  }
  return undefined;
}

export type Selection = { upstream: Upstream } | { upstream: undefined; full: boolean };

/**
 * Picks a replica for one attempt within the caps. `tried` collects replicas this request must not use
 * again (tried before, or found full); it is created on demand so the common first pick allocates nothing.
 */
export function selectReplica(
  selector: Selector,
  set: UpstreamSet,
  caps: Caps,
  client: string,
  stickyKey: string | undefined,
  tried: { set: Set<string> | null },
): Selection {
  let full = false;
  for (let i = 0; i < 4; i++) {
    const u = selector.pick(set, { exclude: tried.set ?? undefined, stickyKey });
    if (!u) return { upstream: undefined, full };
    if (u.available(client, caps)) return { upstream: u };
    // Full replica (or this client's share of it is): skip it for this request and look for another.
    full = true;
    (tried.set ??= new Set()).add(u.id);
  }
  return { upstream: undefined, full };
}
