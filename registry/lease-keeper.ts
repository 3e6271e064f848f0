/**
 * Client-side lease handle shared by every backend: renews the lease at a third of its TTL and reports
 * loss once renewal is refused (the lease is gone) or has not succeeded for a whole TTL.
 */
import type { Lease } from '../protocol/registry.js';

export interface LeaseTransport {
  /** Resolves true if the lease was renewed, false if it no longer exists; rejects on transport errors. */
  keepAlive(id: string): Promise<boolean>;
  revoke(id: string): Promise<void>;
}

export class KeptLease implements Lease {
  private timer: NodeJS.Timeout | null = null;
  private lastRenewed = Date.now();
  private lost = false;
  private readonly listeners: Array<() => void> = [];
  private readonly endListeners: Array<() => void> = [];

  constructor(
    readonly id: string,
    readonly ttlMs: number,
    private readonly transport: LeaseTransport,
  ) {
    const every = Math.max(50, Math.floor(ttlMs / 3));
    this.timer = setInterval(() => void this.renew(), every);
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      const alive = await this.transport.keepAlive(this.id);
      if (alive) this.lastRenewed = Date.now();
      else this.markLost();
    } catch {
      if (Date.now() - this.lastRenewed >= this.ttlMs) this.markLost();
    }
  }

  private markLost(): void {
    if (this.lost) return;
    this.lost = true;
    this.stop();
    for (const l of this.listeners) l();
    this.ended();
  }

  private ended(): void {
    for (const l of this.endListeners.splice(0)) l();
  }

  onLost(listener: () => void): void {
    if (this.lost) queueMicrotask(listener);
    else this.listeners.push(listener);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async revoke(): Promise<void> {
    this.stop();
    this.lost = true;
    this.ended();
    await this.transport.revoke(this.id);
  }

  /** Called once when the lease ends, by revocation or loss. */
  onEnded(listener: () => void): void {
    if (this.lost) queueMicrotask(listener);
    else this.endListeners.push(listener);
  }
}

/** The leases a registry client holds, so `close()` can stop their keep-alives; ended leases drop out. */
export class HeldLeases {
  private readonly leases = new Set<KeptLease>();

  add(lease: KeptLease): KeptLease {
    this.leases.add(lease);
    lease.onEnded(() => this.leases.delete(lease));
    return lease;
  }

  get size(): number {
    return this.leases.size;
  }

  stopAll(): void {
    for (const l of this.leases) l.stop();
  }
}
