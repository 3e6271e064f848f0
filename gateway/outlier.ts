/**
 * Passive outlier detection: a replica whose attempts keep failing (5xx answers or connection errors) is
 * ejected from its balancer, for longer each time it is ejected again, and a success resets its streak.
 * Connection failures eject at once: the replica is not there.
 */
/** What ejection acts on: a replica set (upstream.ts), or any balancer with the same two methods. */
export interface Ejectable {
  isEjected(id: string): boolean;
  eject(id: string, durationMs: number): void;
}

interface Record {
  consecutive: number;
  ejections: number;
  lastEjection: number;
}

export interface OutlierOptions {
  consecutiveFailures: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  onEject?: (id: string, ms: number) => void;
}

export class OutlierDetector {
  private readonly records = new Map<string, Record>();
  constructor(private readonly opts: OutlierOptions) {}

  /** Reports the outcome of one attempt on upstream `id` of `balancer`. */
  report(balancer: Ejectable, id: string, outcome: 'ok' | 'error' | 'connect'): void {
    let r = this.records.get(id);
    if (outcome === 'ok') {
      if (r) r.consecutive = 0;
      return;
    }
    if (!r) this.records.set(id, (r = { consecutive: 0, ejections: 0, lastEjection: 0 }));
    r.consecutive++;
    if (outcome !== 'connect' && r.consecutive < this.opts.consecutiveFailures) return;
    if (balancer.isEjected(id)) return;
    const now = Date.now();
    // An upstream that behaved for a long while starts its backoff over.
    if (now - r.lastEjection > this.opts.maxEjectionMs * 2) r.ejections = 0;
    const ms = Math.min(this.opts.baseEjectionMs * 2 ** r.ejections, this.opts.maxEjectionMs);
    r.ejections++;
    r.lastEjection = now;
    r.consecutive = 0;
    balancer.eject(id, ms);
    this.opts.onEject?.(id, ms);
  }

  forget(id: string): void {
    this.records.delete(id);
  }
}
