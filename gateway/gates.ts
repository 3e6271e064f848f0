/**
 * Admission control: a per-route limit on requests in flight with a short queue (circuit breaking), and
 * a retry budget so that retries can never multiply load when replicas struggle.
 */

interface Waiter {
  resolve: (admitted: boolean) => void;
  timer: NodeJS.Timeout;
}

interface RouteState {
  inFlight: number;
  queue: Waiter[];
}

export class RouteGate {
  private readonly routes = new Map<string, RouteState>();

  /**
   * Admits a request on `route` now (true), after waiting in the queue (a promise of true), or refuses it
   * once `queueTimeoutMs` passes (a promise of false). The fast path returns a plain boolean.
   */
  acquire(route: string, limit: number, queueTimeoutMs: number): boolean | Promise<boolean> {
    let state = this.routes.get(route);
    if (!state) this.routes.set(route, (state = { inFlight: 0, queue: [] }));
    if (state.inFlight < limit) {
      state.inFlight++;
      return true;
    }
    const s = state;
    return new Promise<boolean>((resolve) => {
      const waiter: Waiter = {
        resolve,
        timer: setTimeout(() => {
          const i = s.queue.indexOf(waiter);
          if (i >= 0) s.queue.splice(i, 1);
          resolve(false);
        }, queueTimeoutMs),
      };
      s.queue.push(waiter);
    });
  }

  release(route: string): void {
    const state = this.routes.get(route);
    if (!state) return;
    const next = state.queue.shift();
    if (next) {
      // Hand the slot straight to the next waiter: inFlight stays the same.
      clearTimeout(next.timer);
      next.resolve(true);
      return;
    }
    state.inFlight--;
    if (state.inFlight <= 0) this.routes.delete(route);
  }

  inFlight(route: string): number {
    return this.routes.get(route)?.inFlight ?? 0;
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

  tryAcquire(): boolean {
    if (this.retries >= Math.max(this.minRetries, this.ratio * this.active)) return false;
    this.retries++;
    return true;
  }

  release(): void {
    if (this.retries > 0) this.retries--;
  }
}
