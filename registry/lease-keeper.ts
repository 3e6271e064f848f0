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
    await this.transport.revoke(this.id);
  }
}
