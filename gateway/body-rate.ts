/**
 * Request bodies on their way upstream: a meter that counts bytes and enforces the size limit (for bodies
 * without Content-Length), and a guard that cuts bodies arriving slower than a minimum rate (slow POST).
 * A slow body holds a route slot and a replica connection for as long as it trickles, so a few thousand
 * sockets sending a byte a second could hold every slot of a route; with the guard each one lasts at most
 * about a window.
 */
import { type Readable, Transform } from 'node:stream';

export class BodyTooLarge extends Error {
  readonly code = 'ALLEGRA_BODY_TOO_LARGE';
}

export class BodyTooSlow extends Error {
  readonly code = 'ALLEGRA_BODY_TOO_SLOW';
}

/** Passes a request body through, counting it and failing once it exceeds `max` bytes. */
export class BodyMeter extends Transform {
  bytes = 0;
  constructor(
    private readonly source: Readable,
    private readonly max: number,
  ) {
    super();
    source.on('error', (err: Error) => this.destroy(err));
    source.pipe(this);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    if (this.bytes > this.max) return cb(new BodyTooLarge(`request body exceeds ${this.max} bytes`));
    cb(null, chunk);
  }

  /** Data is waiting on our side: the replica (or the gateway) is the slow one, not the client. */
  get backlogged(): boolean {
    return this.readableLength > 0 || this.writableLength > 0 || this.source.readableLength > 0;
  }
}

interface Tracked {
  meter: BodyMeter;
  windowStart: number;
  windowBytes: number;
  onTooSlow: () => void;
}

export class BodyRateGuard {
  private readonly tracked = new Set<Tracked>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly minBytesPerSec: number,
    private readonly windowMs: number,
    private readonly checkEveryMs = Math.min(1_000, windowMs),
  ) {}

  /**
   * Watches `meter` until it ends; calls `onTooSlow` once if a window's average rate falls short. Bodies that
   * started together (a slow-POST wave) fail their window together: `onTooSlow` should only queue the cut
   * (the exchange puts it in its client's intake lane) so other requests are served in between.
   */
  watch(meter: BodyMeter, onTooSlow: () => void): void {
    if (this.minBytesPerSec <= 0) return;
    const t: Tracked = { meter, windowStart: performance.now(), windowBytes: 0, onTooSlow };
    this.tracked.add(t);
    const forget = () => this.tracked.delete(t);
    // 'end' fires on the readable side only once it is read: the source's end is what the client sent.
    meter.once('finish', forget);
    meter.once('close', forget);
    this.timer ??= setInterval(() => this.check(), this.checkEveryMs).unref();
  }

  private check(): void {
    const now = performance.now();
    const tooSlow: Tracked[] = [];
    for (const t of this.tracked) {
      if (t.meter.backlogged) {
        // Not reading is our side's choice (backpressure): start a fresh window.
        t.windowStart = now;
        t.windowBytes = t.meter.bytes;
        continue;
      }
      const elapsed = now - t.windowStart;
      if (elapsed < this.windowMs) continue;
      const rate = ((t.meter.bytes - t.windowBytes) * 1000) / elapsed;
      if (rate < this.minBytesPerSec) {
        this.tracked.delete(t);
        tooSlow.push(t);
        continue;
      }
      t.windowStart = now;
      t.windowBytes = t.meter.bytes;
    }
    for (const t of tooSlow) t.onTooSlow();
    if (this.tracked.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.tracked.clear();
  }
}
