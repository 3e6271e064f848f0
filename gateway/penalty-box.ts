/**
 * Client addresses caught abusing HTTP/2 (rapid reset, stream floods that trip nghttp2's limits) are
 * refused new connections for a while, right at accept, before TLS or HTTP/2 costs anything. Without it
 * a reconnecting attacker pays one TCP handshake per connection the gateway closes and the gateway pays a
 * session set-up plus everything up to the next detection, again and again. Each new strike doubles the
 * block (up to 32×); the table is bounded so that a spoofing flood cannot grow it without limit.
 */
export class PenaltyBox {
  private readonly entries = new Map<string, { until: number; strikes: number }>();

  constructor(
    private readonly blockMs: number,
    private readonly maxEntries = 100_000,
  ) {}

  strike(ip: string): void {
    if (this.blockMs <= 0 || !ip) return;
    const now = performance.now();
    const prev = this.entries.get(ip);
    const strikes = prev && prev.until + this.blockMs * 4 > now ? prev.strikes + 1 : 1;
    if (!prev && this.entries.size >= this.maxEntries) this.sweep(now);
    if (!prev && this.entries.size >= this.maxEntries) return;
    this.entries.set(ip, { until: now + this.blockMs * 2 ** Math.min(strikes - 1, 5), strikes });
  }

  isBlocked(ip: string | undefined): boolean {
    if (!ip || this.entries.size === 0) return false;
    const e = this.entries.get(ip);
    return e !== undefined && e.until > performance.now();
  }

  private sweep(now: number): void {
    for (const [ip, e] of this.entries) if (e.until + this.blockMs * 4 <= now) this.entries.delete(ip);
  }
}
