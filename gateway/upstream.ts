/**
 * One replica as the gateway sees it, and the set of them behind one route. Everything the gateway knows
 * about a replica lives on its `Upstream`: attempts in flight (in total and per client address), the
 * latency estimate, ejection by outlier detection, slow start, health (active checks, node liveness) and
 * the caps an attempt must fit in (`available`). The engine starts and ends every attempt of every
 * transport through it, so caps and statistics hold across HTTP, gRPC and WebSocket alike.
 *
 * Latency is a peak-EWMA (Finagle's and Linkerd's): it jumps up to any slower observation at once and
 * otherwise decays toward recent observations with time constant `decayMs`; while a replica is idle its
 * estimate decays toward zero, so one that was slow long ago gets probed again. Selection policies over a
 * set are in selector.ts; when to eject is decided by outlier.ts.
 */
import { hash32 } from '../router/hash.js';

export interface UpstreamInit {
  /** Stable id of the replica slot: `${nodeId}.${slot}@${endpoint}`. */
  id: string;
  endpoint: string;
  nodeId: string;
  /** Relative weight (default 1). Non-positive or non-finite weights count as a tiny weight (drained). */
  weight?: number;
}

export interface Caps {
  /** Attempts in flight on one replica before it counts as full. */
  perReplica: number;
  /** Attempts one client address may have in flight on one replica. */
  perClient: number;
}

export interface UpstreamSetOptions {
  now?: () => number;
  random?: () => number;
  /** Time constant (ms) of the latency estimate's decay. Default 10 000. */
  decayMs?: number;
  /**
   * Replicas added to a set that already had some, and replicas coming back from ejection, ramp their
   * weight linearly from `slowStartMinWeight` to full over this window (ms). Default 10 000; 0 disables.
   */
  slowStartMs?: number;
  slowStartMinWeight?: number;
  /**
   * When fewer than this fraction of the replicas are un-ejected, ejections are ignored (Envoy's panic
   * threshold), so a wave of ejections cannot send all traffic to the last survivor. Default 0.5.
   */
  panicThreshold?: number;
  /** A failed attempt is observed as max(its latency, estimate × failurePenalty). Default 2. */
  failurePenalty?: number;
}

const MIN_WEIGHT = 1e-3;
const MAX_LATENCY_MS = 3_600_000;
const STICKY_SEED = 0x2545f491;

export class Upstream {
  readonly id: string;
  readonly endpoint: string;
  readonly nodeId: string;
  weight: number;
  /** Hash of the id, for rendezvous (sticky) scoring. */
  readonly idHash: number;
  /** Attempts in flight, all clients. */
  inFlight = 0;
  private readonly byClient = new Map<string, number>();
  /** Peak-EWMA latency (ms) as of `stamp`. */
  latency: number;
  stamp: number;
  ejectedUntil = Number.NEGATIVE_INFINITY;
  /** Slow start ramps from this time; -Infinity when not ramping. */
  rampStart: number;
  /** Out of rotation: failing the gateway's active health checks, or its node stopped answering. */
  down = false;

  constructor(init: UpstreamInit, latency: number, now: number, rampStart: number) {
    this.id = init.id;
    this.endpoint = init.endpoint;
    this.nodeId = init.nodeId;
    this.weight = sanitizeWeight(init.weight);
    this.idHash = hash32(init.id, STICKY_SEED);
    this.latency = latency;
    this.stamp = now;
    this.rampStart = rampStart;
  }

  /** Whether one more attempt by `client` fits within the caps. */
  available(client: string, caps: Caps): boolean {
    if (this.inFlight === 0) return true;
    return this.inFlight < caps.perReplica && (this.byClient.get(client) ?? 0) < caps.perClient;
  }

  /** In flight for one client (metrics, tests). */
  inFlightOf(client: string): number {
    return this.byClient.get(client) ?? 0;
  }

  /** An attempt by `client` starts. */
  start(client: string): void {
    this.inFlight++;
    this.byClient.set(client, (this.byClient.get(client) ?? 0) + 1);
  }

  /** The attempt ends; `outcome` decides what it says about the replica (a cancelled one says nothing). */
  end(client: string, outcome: 'ok' | 'failed' | 'cancelled', latencyMs: number, set: UpstreamSet): void {
    if (this.inFlight > 0) this.inFlight--;
    const n = (this.byClient.get(client) ?? 1) - 1;
    if (n <= 0) this.byClient.delete(client);
    else this.byClient.set(client, n);
    if (outcome !== 'cancelled') set.observe(this, latencyMs, outcome === 'ok');
  }
}

/** The replicas behind one route, with what selection needs: the un-ejected pool and the cost of each. */
export class UpstreamSet {
  private list: Upstream[] = [];
  private readonly byId = new Map<string, Upstream>();
  /** Indices (into list) of replicas in rotation (not down, not ejected); the first activeCount are valid. */
  private active = new Int32Array(0);
  private activeCount = 0;
  /** Indices of replicas not down: the pool in panic. */
  private healthy = new Int32Array(0);
  private healthyCount = 0;
  private nextExpiry = Number.POSITIVE_INFINITY;
  maxWeight = 1;
  uniformWeights = true;

  readonly now: () => number;
  readonly random: () => number;
  private readonly decayMs: number;
  private readonly slowStartMs: number;
  private readonly slowStartMinWeight: number;
  private readonly panicThreshold: number;
  private readonly failurePenalty: number;

  constructor(opts: UpstreamSetOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.decayMs = Math.max(1, opts.decayMs ?? 10_000);
    this.slowStartMs = Math.max(0, opts.slowStartMs ?? 10_000);
    this.slowStartMinWeight = Math.min(1, Math.max(MIN_WEIGHT, opts.slowStartMinWeight ?? 0.1));
    this.panicThreshold = Math.min(1, Math.max(0, opts.panicThreshold ?? 0.5));
    this.failurePenalty = Math.max(1, opts.failurePenalty ?? 2);
  }

  /**
   * Replaces the replicas; the state of replicas that stay is kept. Replicas new to a set that already had
   * some start in slow start; the very first ones do not (all would ramp together). `down` lists endpoints
   * out of rotation by health; when every replica is down, health is ignored (the checks are then more
   * likely wrong than every replica, and trying them beats refusing).
   */
  set(inits: readonly UpstreamInit[], isDown: (endpoint: string) => boolean = () => false): void {
    const now = this.now();
    const initial = this.list.length === 0;
    const initialLatency = this.meanLatency(now) ?? 1;
    const next: Upstream[] = [];
    const seen = new Set<string>();
    for (const init of inits) {
      if (seen.has(init.id)) continue;
      seen.add(init.id);
      let u = this.byId.get(init.id);
      if (u) u.weight = sanitizeWeight(init.weight);
      else u = new Upstream(init, initialLatency, now, initial ? Number.NEGATIVE_INFINITY : now);
      next.push(u);
    }
    let down = 0;
    for (const u of next) {
      u.down = isDown(u.endpoint);
      if (u.down) down++;
    }
    if (down === next.length) for (const u of next) u.down = false;
    this.byId.clear();
    for (const u of next) this.byId.set(u.id, u);
    this.list = next;
    this.maxWeight = next.reduce((max, u) => Math.max(max, u.weight), MIN_WEIGHT);
    this.uniformWeights = next.every((u) => u.weight === this.maxWeight);
    this.active = new Int32Array(next.length);
    this.healthy = new Int32Array(next.length);
    this.refresh(now);
  }

  /** Every replica, down or not, in the order given to `set`. */
  get all(): readonly Upstream[] {
    return this.list;
  }

  get(id: string): Upstream | undefined {
    return this.byId.get(id);
  }

  /** Replicas known, and replicas in rotation by health. */
  get size(): number {
    return this.list.length;
  }

  get inRotation(): number {
    return this.healthyCount;
  }

  /**
   * The pool to select from now: replicas in rotation, or, when so many are ejected that the panic
   * threshold is crossed, every healthy replica (ejections ignored).
   */
  pool(now: number): { indices: Int32Array; count: number } {
    if (now >= this.nextExpiry) this.refresh(now);
    const panic = this.activeCount === 0 || this.activeCount < this.panicThreshold * this.healthyCount;
    return panic ? { indices: this.healthy, count: this.healthyCount } : { indices: this.active, count: this.activeCount };
  }

  at(index: number): Upstream {
    return this.list[index] as Upstream;
  }

  /** Whether a replica is eligible for a sticky pick now (not down, not ejected outside panic). */
  eligible(u: Upstream, now: number): boolean {
    if (u.down) return false;
    if (!(u.ejectedUntil > now)) return true;
    const { indices } = this.pool(now);
    return indices === this.healthy;
  }

  /** Cost of sending one more attempt: latency × (in flight / weight + 1). */
  cost(u: Upstream, now: number): number {
    return Math.max(0.001, this.decayedLatency(u, now)) * (u.inFlight / this.effectiveWeight(u, now) + 1);
  }

  decayedLatency(u: Upstream, now: number): number {
    const elapsed = now - u.stamp;
    return elapsed > 0 ? u.latency * Math.exp(-elapsed / this.decayMs) : u.latency;
  }

  effectiveWeight(u: Upstream, now: number): number {
    if (!(u.rampStart > Number.NEGATIVE_INFINITY)) return u.weight;
    const progress = (now - u.rampStart) / this.slowStartMs;
    // Still ejected (the ramp starts when the ejection ends): only sampled in panic, where all count in full.
    if (progress < 0) return u.weight;
    if (!(progress < 1)) {
      u.rampStart = Number.NEGATIVE_INFINITY;
      return u.weight;
    }
    return u.weight * Math.max(this.slowStartMinWeight, progress);
  }

  /** Records an attempt's latency (peak EWMA); a failure counts at least `failurePenalty` × the estimate. */
  observe(u: Upstream, latencyMs: number, ok: boolean): void {
    const now = this.now();
    const current = this.decayedLatency(u, now);
    let observed = Number.isFinite(latencyMs) && latencyMs > 0 ? latencyMs : 0;
    if (!ok) observed = Math.max(observed, current * this.failurePenalty);
    observed = Math.min(observed, MAX_LATENCY_MS);
    if (observed > current) u.latency = observed;
    else {
      const keep = Math.exp(-Math.max(0, now - u.stamp) / this.decayMs);
      u.latency = current * keep + observed * (1 - keep);
    }
    u.stamp = now;
  }

  /** Takes a replica out of rotation for `durationMs`; when it returns it goes through slow start. */
  eject(id: string, durationMs: number): void {
    const u = this.byId.get(id);
    if (!u) return;
    const now = this.now();
    u.ejectedUntil = now + Math.max(0, durationMs);
    if (this.slowStartMs > 0) u.rampStart = u.ejectedUntil;
    this.refresh(now);
  }

  isEjected(id: string): boolean {
    const u = this.byId.get(id);
    return u !== undefined && u.ejectedUntil > this.now();
  }

  /** Latency estimate, effective weight and ejection of one replica, for metrics. */
  stats(u: Upstream): { latencyMs: number; weightRatio: number; ejected: boolean } {
    const now = this.now();
    return { latencyMs: this.decayedLatency(u, now), weightRatio: this.effectiveWeight(u, now) / u.weight, ejected: u.ejectedUntil > now };
  }

  private meanLatency(now: number): number | undefined {
    if (this.list.length === 0) return undefined;
    let sum = 0;
    for (const u of this.list) sum += this.decayedLatency(u, now);
    return sum / this.list.length;
  }

  private refresh(now: number): void {
    let active = 0;
    let healthy = 0;
    let nextExpiry = Number.POSITIVE_INFINITY;
    for (let i = 0; i < this.list.length; i++) {
      const u = this.list[i] as Upstream;
      if (u.down) continue;
      this.healthy[healthy++] = i;
      if (u.ejectedUntil > now) {
        if (u.ejectedUntil < nextExpiry) nextExpiry = u.ejectedUntil;
      } else this.active[active++] = i;
    }
    this.activeCount = active;
    this.healthyCount = healthy;
    this.nextExpiry = nextExpiry;
  }
}

function sanitizeWeight(weight: number | undefined): number {
  if (weight === undefined) return 1;
  return Number.isFinite(weight) && weight > MIN_WEIGHT ? weight : MIN_WEIGHT;
}
