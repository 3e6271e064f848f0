/**
 * The activator: a request for an instance that scales to zero and has no replica in rotation is held
 * here instead of being refused, the instance is woken through the registry (the gateway's load signal
 * names the held requests; the elected autoscaler asks for replicas at once), and the queue is released
 * on the first healthy replica, oldest first. Bounded: a queue per instance and one for the gateway, and a
 * deadline per request (never past the request's own); past either, 503 with Retry-After. A client that
 * leaves while held is forgotten. Released responses carry `x-allegra-cold-start: <ms held>`, and the
 * wait is exported as the `allegra_gateway_cold_start_seconds` histogram.
 *
 * The hook into the request path is the engine's resolve phase (engine.ts): a route without a replica in
 * rotation whose instance sleeps is handed to `hold`, which knows nothing of the runtime's request objects:
 * it calls `resume` to forward and `refuse` to answer 503.
 */
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry as MetricsRegistry } from 'prom-client';
import type { InstanceSpec, RouteRecord } from '../protocol/types.js';
import { scalesToZero } from '../router/scale.js';

export interface ActivatorOptions {
  /** Requests held per instance; more are refused at once (503). */
  maxPerInstance: number;
  /** Requests held by this gateway in all. */
  maxTotal: number;
  /** How long a request waits for its instance to wake (bounded by the request's own deadline too). */
  timeoutMs: number;
}

export const DEFAULT_ACTIVATOR: ActivatorOptions = { maxPerInstance: 2_000, maxTotal: 20_000, timeoutMs: 30_000 };

/** What became of a held request when the activator tried to forward it. */
export type Resumed = 'forwarded' | 'no-replica' | 'full';

/** How the request path lets a held request go on. */
export interface HeldRequest {
  /** Forwards the request if the instance has a replica with room for it (and not otherwise); `coldStartMs` is how long it was held. */
  resume(coldStartMs: number): Resumed;
  /** Answers 503 with Retry-After and this one-line reason. */
  refuse(message: string): void;
}

/** Given back by `hold`: the caller cancels when its client goes away. */
export interface HoldTicket {
  cancel(): void;
}

interface Held {
  request: HeldRequest;
  since: number;
  timer: ReturnType<typeof setTimeout>;
  done: boolean;
}

/** While held requests wait for room on the replicas that are up, they are offered again this often. */
const RETRY_MS = 5;

export class Activator {
  readonly opts: ActivatorOptions;
  private readonly queues = new Map<string, Held[]>();
  private readonly retries = new Map<string, NodeJS.Timeout>();
  private total = 0;
  private readonly coldStart: Histogram<'route'>;
  private readonly heldGauge: Gauge<'route'>;
  private readonly refused: Counter<'reason'>;
  private readonly names = new Map<string, string>();

  constructor(
    opts: Partial<ActivatorOptions>,
    metrics: MetricsRegistry,
    private readonly log: Logger,
    /** Told whenever the number of held requests of an instance changes (the load signal wakes it). */
    private readonly onHeldChanged: (instanceId: string) => void,
  ) {
    this.opts = { ...DEFAULT_ACTIVATOR, ...opts };
    this.coldStart = new Histogram({
      name: 'allegra_gateway_cold_start_seconds',
      help: 'Time requests for a sleeping instance (scaled to zero) waited for its first healthy replica, by route',
      labelNames: ['route'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30],
      registers: [metrics],
    });
    this.heldGauge = new Gauge({
      name: 'allegra_gateway_activator_held',
      help: 'Requests held for a sleeping instance, by route',
      labelNames: ['route'] as const,
      registers: [metrics],
      collect: () => {
        this.heldGauge.reset();
        for (const [id, q] of this.queues) this.heldGauge.labels(this.names.get(id) ?? id).set(q.length);
      },
    });
    this.refused = new Counter({
      name: 'allegra_gateway_activator_refused_total',
      help: 'Requests for a sleeping instance answered 503 by the activator, by reason (queue-full, timeout)',
      labelNames: ['reason'] as const,
      registers: [metrics],
    });
  }

  /** Whether a request for this route, which has no replica in rotation, should wait for the instance to wake. */
  wouldHold(route: RouteRecord, spec: InstanceSpec | undefined): boolean {
    return spec !== undefined && spec.id === route.instanceId && scalesToZero(spec);
  }

  /** Requests held per instance id (the load signal). */
  heldCounts(): ReadonlyMap<string, number> {
    const out = new Map<string, number>();
    for (const [id, q] of this.queues) out.set(id, q.length);
    return out;
  }

  /**
   * Holds a request until `release(instanceId)` finds the instance servable, then resumes it. `deadlineMs` is
   * the request's own timeout: the wait never exceeds it. Null when refused at once (the queue is full).
   */
  hold(route: RouteRecord, deadlineMs: number, request: HeldRequest): HoldTicket | null {
    const id = route.instanceId;
    this.names.set(id, route.instanceName);
    let queue = this.queues.get(id);
    if ((queue?.length ?? 0) >= this.opts.maxPerInstance || this.total >= this.opts.maxTotal) {
      this.refused.labels('queue-full').inc();
      request.refuse(`${route.host} is waking up and its queue is full; retry shortly`);
      return null;
    }
    if (!queue) this.queues.set(id, (queue = []));
    const q = queue;
    const waitMs = Math.max(0, Math.min(this.opts.timeoutMs, deadlineMs));
    const held: Held = {
      request,
      since: performance.now(),
      done: false,
      timer: setTimeout(() => {
        if (!this.drop(id, q, held)) return;
        this.refused.labels('timeout').inc();
        request.refuse(`${route.host} did not wake within ${waitMs} ms; retry shortly`);
      }, waitMs),
    };
    q.push(held);
    this.total++;
    this.onHeldChanged(id);
    return {
      cancel: () => {
        if (this.drop(id, q, held)) this.log.debug({ route: route.host }, 'client left while its request was held');
      },
    };
  }

  /** Removes a held request; true if it was still held. */
  private drop(id: string, q: Held[], held: Held): boolean {
    if (held.done) return false;
    held.done = true;
    clearTimeout(held.timer);
    const i = q.indexOf(held);
    if (i >= 0) q.splice(i, 1);
    this.total--;
    if (q.length === 0 && this.queues.get(id) === q) this.queues.delete(id);
    this.onHeldChanged(id);
    return true;
  }

  /**
   * The instance may have a replica in rotation now: forward its held requests, oldest first, as long as
   * its replicas have room (a burst of a thousand must not meet "every replica is at capacity" on the
   * first replica up); the rest wait, within their deadline, for room or for more replicas.
   */
  release(instanceId: string): void {
    const q = this.queues.get(instanceId);
    if (!q || q.length === 0) return;
    const route = this.names.get(instanceId) ?? instanceId;
    const now = performance.now();
    let released = 0;
    let firstSince = 0;
    for (const held of [...q]) {
      const ms = now - held.since;
      // Dropped first: a request resumed and then answered at once must not be released again.
      held.done = true;
      const outcome = held.request.resume(ms);
      held.done = false;
      if (outcome !== 'forwarded') {
        if (outcome === 'full') this.retrySoon(instanceId);
        break;
      }
      if (released++ === 0) firstSince = ms;
      this.coldStart.labels(route).observe(ms / 1000);
      this.drop(instanceId, q, held);
    }
    if (released > 0)
      this.log.info({ route, released, waitedMs: Math.round(firstSince), stillHeld: q.length }, 'instance awake: held requests released');
  }

  private retrySoon(instanceId: string): void {
    if (this.retries.has(instanceId)) return;
    const timer = setTimeout(() => {
      this.retries.delete(instanceId);
      this.release(instanceId);
    }, RETRY_MS);
    this.retries.set(instanceId, timer);
  }

  close(): void {
    for (const timer of this.retries.values()) clearTimeout(timer);
    this.retries.clear();
    for (const [id, q] of [...this.queues]) {
      for (const held of [...q]) {
        if (!this.drop(id, q, held)) continue;
        held.request.refuse('the gateway is shutting down; retry');
      }
    }
  }
}
