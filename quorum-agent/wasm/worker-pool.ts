/**
 * Spare replica workers, booted ahead of need. Booting a worker thread (a Node environment plus our
 * worker module) takes tens of milliseconds; with a spare ready, loading a replica or replacing a
 * terminated worker costs only the instantiation of the app.
 */
import { Worker } from 'node:worker_threads';
import type { WorkerMessage, WorkerWarmup } from './worker-protocol.js';

const WORKER_URL = new URL('./replica-worker.js', import.meta.url);

/**
 * The worker's own JS heap (our glue's objects, the lifted request/response bytes) is capped so a
 * misbehaving replica cannot take the host's memory through it; the guest's linear memory is limited
 * separately by the module's memory maximum.
 */
const WORKER_LIMITS = { maxOldGenerationSizeMb: 128, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 };

export class WorkerPool {
  private readonly spares: Promise<Worker>[] = [];
  /** Spares that finished warming for the current bindings. */
  private readonly warm = new WeakMap<Worker, string>();
  private readonly ready = new Set<Worker>();
  private closed = false;
  private warmup: WorkerWarmup | undefined;
  booted = 0;

  /**
   * Spares warm up for the most recently loaded artifact: its bindings are the same JS for every app
   * compiled with this toolchain (content-addressed by compile.ts), so one warm-up serves any artifact.
   */
  warmFor(bindingsUrl: string, modules: Record<string, WebAssembly.Module>): void {
    if (this.warmup?.bindingsUrl === bindingsUrl) return;
    this.warmup = { type: 'warmup', bindingsUrl, modules };
    for (const p of this.spares) void p.then((w) => this.warmup && w.postMessage(this.warmup)).catch(() => undefined);
  }

  constructor(private readonly target = 2) {
    this.topUp();
  }

  /** A booted worker: a spare when there is one, else a fresh one. */
  take(): Promise<Worker> {
    const w = this.spares.shift() ?? this.boot();
    this.topUp();
    return w.then((worker) => {
      this.ready.delete(worker);
      return worker;
    });
  }

  /** Spares booted and, when there is an artifact to warm for, warmed for it. */
  get readySpares(): number {
    let n = 0;
    for (const w of this.ready) if (!this.warmup || this.warm.get(w) === this.warmup.bindingsUrl) n++;
    return n;
  }

  private topUp(): void {
    while (!this.closed && this.spares.length < this.target) {
      const p = this.boot();
      p.catch(() => undefined);
      this.spares.push(p);
    }
  }

  private boot(): Promise<Worker> {
    return new Promise((resolve, reject) => {
      const w = new Worker(WORKER_URL, { resourceLimits: WORKER_LIMITS, stdout: false, stderr: false });
      // Spares must not keep the host alive on their own.
      w.unref();
      const onWarmed = (m: WorkerMessage) => {
        if (m.type === 'warmed') this.warm.set(w, m.bindingsUrl);
      };
      const onMessage = (m: WorkerMessage) => {
        if (m.type !== 'booted') return;
        w.off('message', onMessage);
        w.off('error', reject);
        w.on('message', onWarmed);
        this.ready.add(w);
        this.booted++;
        if (this.warmup) w.postMessage(this.warmup);
        resolve(w);
      };
      w.on('message', onMessage);
      w.once('error', reject);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const spares = this.spares.splice(0);
    await Promise.all(spares.map((p) => p.then((w) => w.terminate()).catch(() => undefined)));
  }
}
