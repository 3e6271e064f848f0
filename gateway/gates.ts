/**
 * Admission control (the "admit" phase): a per-route limit on requests in flight with a short, bounded
 * queue (circuit breaking), a cap on the share of a route one client address may hold, and a retry budget
 * so that retries can never multiply load when replicas struggle.
 */

/** Why a request was not admitted. */
export type Refusal = 'client-share' | 'queue-full' | 'queue-timeout';

export interface RouteLimits {
  /** Requests in flight on the route before new ones queue. */
  limit: number;
  /** Requests one client may have admitted or queued on the route at once. */
  clientLimit: number;
  /** Requests that may wait for a slot; beyond that they are refused at once. */
  queueLimit: number;
}

/** Decision callback: null when admitted, the reason when refused. */
export type Decision = (refusal: Refusal | null) => void;

/** A queued request: cancel it when its client goes away, so the slot it would get goes to the next one. */
export interface QueuedAdmission {
  cancel(): void;
}

interface Waiter {
  client: string;
  decide: Decision;
  timer: NodeJS.Timeout;
  done: boolean;
}

interface RouteState {
  inFlight: number;
  queue: Waiter[];
  /** Requests admitted or queued, per client address. */
  clients: Map<string, number>;
}

export class RouteGate {
  private readonly routes = new Map<string, RouteState>();

  /**
   * Admits a request on `route` for `client`: `decide(null)` at once when a slot is free, later when a
   * slot is handed over from the queue, or `decide(reason)` when refused (at once when the client already
   * holds its share or the queue is full, after `waitMs` in the queue otherwise). Returns the queued
   * request's handle, or null when decided synchronously (the fast path allocates nothing).
   */
  acquire(route: string, client: string, limits: RouteLimits, waitMs: number, decide: Decision): QueuedAdmission | null {
    let state = this.routes.get(route);
    if (!state) this.routes.set(route, (state = { inFlight: 0, queue: [], clients: new Map() }));
    const held = state.clients.get(client) ?? 0;
    if (held >= limits.clientLimit) {
      decide('client-share');
      this.forgetIfIdle(route, state);
      return null;
    }
    if (state.inFlight < limits.limit) {
      state.inFlight++;
      state.clients.set(client, held + 1);
      decide(null);
      return null;
    }
    if (state.queue.length >= limits.queueLimit || waitMs <= 0) {
      decide(state.queue.length >= limits.queueLimit ? 'queue-full' : 'queue-timeout');
      return null;
    }
    state.clients.set(client, held + 1);
    const s = state;
    const waiter: Waiter = {
      client,
      decide,
      done: false,
      timer: setTimeout(() => this.drop(route, s, waiter, 'queue-timeout'), waitMs),
    };
    s.queue.push(waiter);
    return { cancel: () => this.drop(route, s, waiter, null) };
  }

  /** Removes a waiter from the queue: timed out (told so) or cancelled by its owner (told nothing). */
  private drop(route: string, state: RouteState, waiter: Waiter, refusal: Refusal | null): void {
    if (waiter.done) return;
    waiter.done = true;
    clearTimeout(waiter.timer);
    const i = state.queue.indexOf(waiter);
    if (i >= 0) state.queue.splice(i, 1);
    this.decrementClient(state, waiter.client);
    this.forgetIfIdle(route, state);
    if (refusal) waiter.decide(refusal);
  }

  release(route: string, client: string): void {
    const state = this.routes.get(route);
    if (!state) return;
    this.decrementClient(state, client);
    const next = state.queue.shift();
    if (next) {
      // Hand the slot straight to the next waiter: inFlight stays the same.
      next.done = true;
      clearTimeout(next.timer);
      next.decide(null);
      return;
    }
    state.inFlight--;
    this.forgetIfIdle(route, state);
  }

  private decrementClient(state: RouteState, client: string): void {
    const n = (state.clients.get(client) ?? 1) - 1;
    if (n <= 0) state.clients.delete(client);
    else state.clients.set(client, n);
  }

  private forgetIfIdle(route: string, state: RouteState): void {
    if (state.inFlight <= 0 && state.queue.length === 0) this.routes.delete(route);
  }

  inFlight(route: string): number {
    return this.routes.get(route)?.inFlight ?? 0;
  }

  queued(route: string): number {
    return this.routes.get(route)?.queue.length ?? 0;
  }

  /** In flight per route key, for metrics. */
  *entries(): IterableIterator<[string, { inFlight: number; queued: number }]> {
    for (const [route, s] of this.routes) yield [route, { inFlight: s.inFlight, queued: s.queue.length }];
  }
}

/** Envoy-style retry budget: retries in flight ≤ max(minRetries, ratio × active requests). */
export class RetryBudget {
  active = 0;
  retries = 0;
  constructor(
    private readonly ratio: number,
    private readonly minRetries = 3,
  ) {}

  /** Whether a retry slot is free now (taking none). */
  available(): boolean {
    return this.retries < Math.max(this.minRetries, this.ratio * this.active);
  }

  tryAcquire(): boolean {
    if (!this.available()) return false;
    this.retries++;
    return true;
  }

  release(): void {
    if (this.retries > 0) this.retries--;
  }
}
