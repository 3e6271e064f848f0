/**
 * Replica balancer: power of two choices (P2C) over peak-EWMA latency × load, with weights, slow start,
 * ejection, a panic threshold and opt-in sticky picks. Knows nothing of HTTP: callers report when a
 * request starts and ends, and decide when to eject.
 *
 * Cost of an endpoint = latency × (inFlight / weight + 1), where latency is a peak-EWMA (Finagle's and
 * Linkerd's "peak EWMA"): it jumps up to any slower observation at once, and otherwise decays toward
 * recent observations with time constant `decayMs`; while an endpoint is idle its estimate decays toward
 * zero so that a replica that was slow long ago gets probed again.
 *
 * Weights act twice, so they mean "share of traffic" at any concurrency: candidates are sampled in
 * proportion to weight and near-equal costs are a tie won by the first candidate (which alone yields
 * proportional shares when nothing is in flight), and in-flight requests are divided by weight (which
 * equalises load per unit of weight when busy).
 *
 * pick() allocates nothing and is O(1) expected: it samples indices from a dense list of non-ejected
 * endpoints, kept up to date when endpoints are ejected and, lazily, when an ejection expires.
 */
import { combine32, hash32, unitInterval } from './hash.js';

export interface BalancerEndpoint {
  id: string;
  /** Relative weight (default 1). Non-positive or non-finite weights count as a tiny weight (drained). */
  weight?: number;
}

export interface BalancerOptions {
  random?: () => number;
  now?: () => number;
  /** Time constant (ms) of the latency estimate's decay. Default 10 000, as in Finagle and Linkerd. */
  decayMs?: number;
  /**
   * Endpoints added to a balancer that already had endpoints, and endpoints coming back from ejection,
   * ramp their weight linearly from `slowStartMinWeight` to full over this window (ms). Default 10 000; 0 disables.
   */
  slowStartMs?: number;
  /** Weight fraction at the start of slow start. Default 0.1 (Envoy's min_weight_percent default). */
  slowStartMinWeight?: number;
  /**
   * When fewer than this fraction of the endpoints are un-ejected, ejections are ignored and traffic is
   * balanced over all endpoints (Envoy's panic threshold), so a wave of ejections cannot send all traffic
   * to the last survivor. Default 0.5; 0 disables.
   */
  panicThreshold?: number;
  /** Latency estimate (ms) of an endpoint with no observations. Default: the mean estimate of its peers, or 1. */
  initialLatencyMs?: number;
  /**
   * A failed request is observed as max(its latency, estimate × failurePenalty), so an endpoint that fails
   * fast does not look fast. Default 2.
   */
  failurePenalty?: number;
}

export interface EndpointStats {
  inFlight: number;
  /** Current latency estimate (ms), decayed to now. */
  latencyMs: number;
  /** Weight after slow start. */
  effectiveWeight: number;
  ejected: boolean;
  /** Consecutive failed requests (reset by a success). */
  consecutiveFailures: number;
}

const DEFAULT_DECAY_MS = 10_000;
const DEFAULT_SLOW_START_MS = 10_000;
const DEFAULT_SLOW_START_MIN_WEIGHT = 0.1;
const DEFAULT_PANIC_THRESHOLD = 0.5;
const DEFAULT_FAILURE_PENALTY = 2;
/** Floor of the latency in the cost, so idle endpoints (estimate decayed to ~0) still compare by load. */
const MIN_LATENCY_MS = 0.001;
/** Caps repeated failure penalties so the estimate stays finite. */
const MAX_LATENCY_MS = 3_600_000;
const MIN_WEIGHT = 1e-3;
/**
 * Costs within 5% are a tie. Estimates differ by noise and by tiny decay differences (the endpoint used
 * least recently has always decayed a little more); letting those decide would make picks alternate
 * deterministically and, with two endpoints, ignore weights entirely. Ties go to the first candidate,
 * which was sampled in proportion to weight.
 */
const TIE_TOLERANCE = 0.05;
/** Weighted rejection sampling gives up after this many draws and falls back to a scan. */
const MAX_SAMPLE_ATTEMPTS = 16;
const STICKY_SEED = 0x2545f491;

/** Mutable per-endpoint state; one object per endpoint with a fixed shape keeps pick() monomorphic. */
class EndpointState<T extends BalancerEndpoint> {
  inFlight = 0;
  /** Peak-EWMA latency (ms) as of `stamp`. */
  latency: number;
  stamp: number;
  ejectedUntil = Number.NEGATIVE_INFINITY;
  /** Slow start ramps from this time; -Infinity when not ramping. */
  rampStart: number;
  consecutiveFailures = 0;
  weight: number;
  /** Hash of the id, for rendezvous (sticky) scoring. */
  readonly idHash: number;

  constructor(
    public endpoint: T,
    latency: number,
    now: number,
    rampStart: number,
  ) {
    this.latency = latency;
    this.stamp = now;
    this.rampStart = rampStart;
    this.weight = sanitizeWeight(endpoint.weight);
    this.idHash = hash32(endpoint.id, STICKY_SEED);
  }
}

export class Balancer<T extends BalancerEndpoint> {
  private states: EndpointState<T>[] = [];
  private endpointList: T[] = [];
  private readonly byId = new Map<string, EndpointState<T>>();
  /** Indices (into states) of un-ejected endpoints; the first activeCount are valid. */
  private active = new Int32Array(0);
  private activeCount = 0;
  /** Identity indices, the sampling pool in panic mode. */
  private all = new Int32Array(0);
  /** Earliest time an ejection expires (Infinity when none is pending). */
  private nextExpiry = Number.POSITIVE_INFINITY;
  private maxWeight = 1;
  private uniformWeights = true;

  private readonly random: () => number;
  private readonly now: () => number;
  private readonly decayMs: number;
  private readonly slowStartMs: number;
  private readonly slowStartMinWeight: number;
  private readonly panicThreshold: number;
  private readonly initialLatencyMs: number | undefined;
  private readonly failurePenalty: number;

  constructor(opts: BalancerOptions = {}) {
    this.random = opts.random ?? Math.random;
    this.now = opts.now ?? Date.now;
    this.decayMs = Math.max(1, opts.decayMs ?? DEFAULT_DECAY_MS);
    this.slowStartMs = Math.max(0, opts.slowStartMs ?? DEFAULT_SLOW_START_MS);
    this.slowStartMinWeight = clamp(opts.slowStartMinWeight ?? DEFAULT_SLOW_START_MIN_WEIGHT, MIN_WEIGHT, 1);
    this.panicThreshold = clamp(opts.panicThreshold ?? DEFAULT_PANIC_THRESHOLD, 0, 1);
    this.initialLatencyMs = opts.initialLatencyMs;
    this.failurePenalty = Math.max(1, opts.failurePenalty ?? DEFAULT_FAILURE_PENALTY);
  }

  /**
   * Replaces the endpoint set; statistics of endpoints that stay are kept. Endpoints new to a balancer
   * that already had endpoints start in slow start; the very first set does not (all would ramp together).
   * A repeated id keeps its first occurrence.
   */
  setEndpoints(list: T[]): void {
    const now = this.now();
    const isInitial = this.states.length === 0;
    const initialLatency = this.initialLatencyMs ?? this.meanLatency(now) ?? 1;
    const states: EndpointState<T>[] = [];
    const endpoints: T[] = [];
    const seen = new Set<string>();
    for (const endpoint of list) {
      if (seen.has(endpoint.id)) continue;
      seen.add(endpoint.id);
      let state = this.byId.get(endpoint.id);
      if (state) {
        state.endpoint = endpoint;
        state.weight = sanitizeWeight(endpoint.weight);
      } else {
        state = new EndpointState(endpoint, initialLatency, now, isInitial ? Number.NEGATIVE_INFINITY : now);
      }
      states.push(state);
      endpoints.push(endpoint);
    }
    this.byId.clear();
    for (const state of states) this.byId.set(state.endpoint.id, state);
    this.states = states;
    this.endpointList = endpoints;
    this.maxWeight = states.reduce((max, s) => Math.max(max, s.weight), MIN_WEIGHT);
    this.uniformWeights = states.every((s) => s.weight === this.maxWeight);
    this.all = Int32Array.from(states.keys());
    this.active = new Int32Array(states.length);
    this.refreshActive(now);
  }

  get size(): number {
    return this.states.length;
  }

  /** The current endpoints, in the order given to setEndpoints (deduplicated). */
  get endpoints(): readonly T[] {
    return this.endpointList;
  }

  /**
   * Picks an endpoint by P2C, skipping ejected ones (unless in panic) and those in `exclude` (already
   * tried by this request). Undefined when no endpoint is eligible.
   */
  pick(exclude?: ReadonlySet<string>): T | undefined {
    const n = this.states.length;
    if (n === 0) return undefined;
    const now = this.now();
    const panic = this.inPanic(now);
    const pool = panic ? this.all : this.active;
    const poolSize = panic ? n : this.activeCount;
    const a = this.sample(pool, poolSize, exclude, now, -1);
    if (a < 0) return undefined;
    const first = this.states[a] as EndpointState<T>;
    if (poolSize === 1) return first.endpoint;
    const b = this.sample(pool, poolSize, exclude, now, a);
    if (b < 0) return first.endpoint;
    const second = this.states[b] as EndpointState<T>;
    // The first candidate was drawn by weight; it keeps the pick unless the second is clearly cheaper.
    return this.cost(second, now) * (1 + TIE_TOLERANCE) < this.cost(first, now) ? second.endpoint : first.endpoint;
  }

  /**
   * Sticky pick: the same key goes to the same endpoint while it is eligible (weighted rendezvous hashing,
   * so adding one endpoint to N moves only ~1/(N+1) of the keys, all of them to the new endpoint). When
   * that endpoint is ejected (outside panic) or excluded, falls back to a normal pick. Slow start does not
   * apply: a session's endpoint is its endpoint. O(endpoints), allocation-free.
   */
  pickSticky(key: string, exclude?: ReadonlySet<string>): T | undefined {
    const target = this.stickyIndex(key);
    if (target < 0) return undefined;
    const state = this.states[target] as EndpointState<T>;
    const now = this.now();
    const eligible = !exclude?.has(state.endpoint.id) && (this.inPanic(now) || !(state.ejectedUntil > now));
    return eligible ? state.endpoint : this.pick(exclude);
  }

  /** The endpoint a sticky key maps to, ignoring ejection (for diagnostics and tests). */
  stickyTarget(key: string): T | undefined {
    const i = this.stickyIndex(key);
    return i < 0 ? undefined : this.states[i]?.endpoint;
  }

  onStart(id: string): void {
    const s = this.byId.get(id);
    if (s) s.inFlight++;
  }

  onEnd(id: string, latencyMs: number, ok: boolean): void {
    const s = this.byId.get(id);
    if (!s) return;
    if (s.inFlight > 0) s.inFlight--;
    const now = this.now();
    const current = this.decayedLatency(s, now);
    let observed = Number.isFinite(latencyMs) && latencyMs > 0 ? latencyMs : 0;
    if (ok) {
      s.consecutiveFailures = 0;
    } else {
      s.consecutiveFailures++;
      observed = Math.max(observed, current * this.failurePenalty);
    }
    this.observe(s, Math.min(observed, MAX_LATENCY_MS), current, now);
  }

  /**
   * Ends a request that was cancelled by its client: it no longer counts as in flight, and its duration
   * says nothing about the endpoint, so the latency estimate is left alone.
   */
  onCancel(id: string): void {
    const s = this.byId.get(id);
    if (s && s.inFlight > 0) s.inFlight--;
  }

  /** Takes an endpoint out of rotation for `durationMs`; when it returns it goes through slow start. */
  eject(id: string, durationMs: number): void {
    const s = this.byId.get(id);
    if (!s) return;
    const now = this.now();
    s.ejectedUntil = now + Math.max(0, durationMs);
    if (this.slowStartMs > 0) s.rampStart = s.ejectedUntil;
    this.refreshActive(now);
  }

  /** Ends an ejection early. */
  uneject(id: string): void {
    const s = this.byId.get(id);
    if (!s || !(s.ejectedUntil > Number.NEGATIVE_INFINITY)) return;
    const now = this.now();
    if (s.ejectedUntil > now && this.slowStartMs > 0) s.rampStart = now;
    s.ejectedUntil = Number.NEGATIVE_INFINITY;
    this.refreshActive(now);
  }

  isEjected(id: string): boolean {
    const s = this.byId.get(id);
    return s !== undefined && s.ejectedUntil > this.now();
  }

  /** Endpoints not currently ejected (allocates; not for the hot path). */
  unejected(): T[] {
    const now = this.now();
    return this.states.filter((s) => !(s.ejectedUntil > now)).map((s) => s.endpoint);
  }

  /** True when so many endpoints are ejected that pick() ignores ejections. */
  get panicking(): boolean {
    return this.states.length > 0 && this.inPanic(this.now());
  }

  stats(id: string): EndpointStats | undefined {
    const s = this.byId.get(id);
    if (!s) return undefined;
    const now = this.now();
    return {
      inFlight: s.inFlight,
      latencyMs: this.decayedLatency(s, now),
      effectiveWeight: this.effectiveWeight(s, now),
      ejected: s.ejectedUntil > now,
      consecutiveFailures: s.consecutiveFailures,
    };
  }

  /**
   * Draws an index from pool[0..size) with probability proportional to effective weight, skipping
   * `avoid` and excluded ids. Rejection sampling is O(1) expected for sane weight ratios; after
   * MAX_SAMPLE_ATTEMPTS it scans from a random offset instead (ignoring weights). -1 if none qualifies.
   */
  private sample(pool: Int32Array, size: number, exclude: ReadonlySet<string> | undefined, now: number, avoid: number): number {
    const random = this.random;
    for (let attempt = 0; attempt < MAX_SAMPLE_ATTEMPTS; attempt++) {
      const i = pool[Math.floor(random() * size)] as number;
      if (i === avoid) continue;
      const s = this.states[i] as EndpointState<T>;
      if (exclude?.has(s.endpoint.id)) continue;
      if (this.uniformWeights && !(s.rampStart > Number.NEGATIVE_INFINITY)) return i;
      const w = this.effectiveWeight(s, now);
      if (w >= this.maxWeight || random() * this.maxWeight < w) return i;
    }
    const offset = Math.floor(random() * size);
    for (let k = 0; k < size; k++) {
      const i = pool[(offset + k) % size] as number;
      if (i === avoid) continue;
      if (exclude?.has((this.states[i] as EndpointState<T>).endpoint.id)) continue;
      return i;
    }
    return -1;
  }

  private cost(s: EndpointState<T>, now: number): number {
    const latency = Math.max(MIN_LATENCY_MS, this.decayedLatency(s, now));
    return latency * (s.inFlight / this.effectiveWeight(s, now) + 1);
  }

  private decayedLatency(s: EndpointState<T>, now: number): number {
    const elapsed = now - s.stamp;
    return elapsed > 0 ? s.latency * Math.exp(-elapsed / this.decayMs) : s.latency;
  }

  /** Peak EWMA: rise to a slower observation at once; otherwise move toward it by the elapsed-time weight. */
  private observe(s: EndpointState<T>, latencyMs: number, current: number, now: number): void {
    if (latencyMs > current) {
      s.latency = latencyMs;
    } else {
      const elapsed = Math.max(0, now - s.stamp);
      const keep = Math.exp(-elapsed / this.decayMs);
      s.latency = current * keep + latencyMs * (1 - keep);
    }
    s.stamp = now;
  }

  private effectiveWeight(s: EndpointState<T>, now: number): number {
    if (!(s.rampStart > Number.NEGATIVE_INFINITY)) return s.weight;
    const progress = (now - s.rampStart) / this.slowStartMs;
    // Still ejected (the ramp starts when the ejection ends): only sampled in panic, where every endpoint
    // counts in full.
    if (progress < 0) return s.weight;
    if (!(progress < 1)) {
      // Ramp finished: stop paying for the check.
      s.rampStart = Number.NEGATIVE_INFINITY;
      return s.weight;
    }
    return s.weight * Math.max(this.slowStartMinWeight, progress);
  }

  private stickyIndex(key: string): number {
    const n = this.states.length;
    if (n === 0) return -1;
    const keyHash = hash32(key, STICKY_SEED);
    let best = -1;
    let bestScore = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < n; i++) {
      const s = this.states[i] as EndpointState<T>;
      const h = combine32(keyHash, s.idHash);
      // Weighted rendezvous (Schindelhauer & Schomaker): score = w / -ln(u) wins with probability w / Σw.
      // With equal weights the raw hash orders the same way and saves the logarithm.
      const score = this.uniformWeights ? h : s.weight / -Math.log(unitInterval(h));
      if (score > bestScore || (score === bestScore && s.endpoint.id < (this.states[best] as EndpointState<T>).endpoint.id)) {
        bestScore = score;
        best = i;
      }
    }
    return best;
  }

  private meanLatency(now: number): number | undefined {
    if (this.states.length === 0) return undefined;
    let sum = 0;
    for (const s of this.states) sum += this.decayedLatency(s, now);
    return sum / this.states.length;
  }

  /** Brings ejections up to date, then tells whether too few endpoints are left to honour them. */
  private inPanic(now: number): boolean {
    if (now >= this.nextExpiry) this.refreshActive(now);
    return this.activeCount === 0 || this.activeCount < this.panicThreshold * this.states.length;
  }

  /** Rebuilds the list of un-ejected endpoints and the time the next ejection expires. */
  private refreshActive(now: number): void {
    let count = 0;
    let nextExpiry = Number.POSITIVE_INFINITY;
    for (let i = 0; i < this.states.length; i++) {
      const until = (this.states[i] as EndpointState<T>).ejectedUntil;
      if (until > now) {
        if (until < nextExpiry) nextExpiry = until;
      } else {
        this.active[count++] = i;
      }
    }
    this.activeCount = count;
    this.nextExpiry = nextExpiry;
  }
}

function sanitizeWeight(weight: number | undefined): number {
  if (weight === undefined) return 1;
  return Number.isFinite(weight) && weight > MIN_WEIGHT ? weight : MIN_WEIGHT;
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}
