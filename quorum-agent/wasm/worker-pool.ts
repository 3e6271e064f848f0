/**
 * Spare replica workers, booted ahead of need. Booting a worker thread (a Node environment plus our
 * worker module) takes tens of milliseconds; with a spare ready, loading a replica or replacing a
 * terminated worker costs at most the instantiation of the app.
 *
 * Spares also warm up for the most recently loaded artifact: they load its bindings (the same JS for
 * every app compiled with this toolchain, content-addressed by compile.ts), answer one synthetic
 * `GET /` in a throwaway instance (so the bindings' JS and the engine's request path are compiled in this
 * thread before a replica needs them), then instantiate a clean instance that a replica of that artifact
 * takes over. The app has neither network nor files, so the throwaway request has no effect outside its
 * instance; a warm-up that does not finish in time (an app that loops on `GET /`) gets its spare
 * terminated, and that artifact is warmed without the request from then on.
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
const WARMUP_TIMEOUT_MS = 5_000;
const TOP_UP_DELAY_MS = 200;

interface Spare {
  worker: Worker;
  /** Artifact key this spare is warming for (undefined when idle). */
  warming?: string;
  timer?: NodeJS.Timeout;
  /** Artifact key of the instance this spare holds, ready to be taken over. */
  warmedFor?: string;
}

export class WorkerPool {
  private readonly spares: Spare[] = [];
  private booting = 0;
  private closed = false;
  private warmup: WorkerWarmup | undefined;
  /** Artifacts whose warm-up request did not finish in time: warmed by instantiation only. */
  private readonly noWarmupRequest = new Set<string>();
  booted = 0;

  constructor(private readonly target = 2) {
    this.topUp();
  }

  warmFor(artifactKey: string, bindingsUrl: string, modules: Record<string, WebAssembly.Module>): void {
    if (this.warmup?.artifactKey === artifactKey) return;
    this.warmup = { type: 'warmup', artifactKey, bindingsUrl, modules, request: !this.noWarmupRequest.has(artifactKey) };
    for (const s of this.spares) if (!s.warming) this.startWarmup(s);
  }

  /** A booted worker: preferably a spare warmed for the current artifact, never one still warming. */
  async take(): Promise<Worker> {
    const key = this.warmup?.artifactKey;
    let i = this.spares.findIndex((s) => !s.warming && s.warmedFor === key);
    if (i < 0) i = this.spares.findIndex((s) => !s.warming);
    const spare = i >= 0 ? this.spares.splice(i, 1)[0] : undefined;
    // Booting and warming a replacement costs a few tens of ms of CPU: started a moment later, it does not
    // compete with the replica that just took this spare for its first requests.
    setTimeout(() => this.topUp(), TOP_UP_DELAY_MS).unref();
    if (spare) {
      spare.worker.removeAllListeners('message');
      spare.worker.removeAllListeners('exit');
      return spare.worker;
    }
    return this.boot();
  }

  /** Spares booted and, when there is an artifact to warm for, warmed for it. */
  get readySpares(): number {
    return this.spares.filter((s) => !s.warming && (!this.warmup || s.warmedFor === this.warmup.artifactKey)).length;
  }

  private startWarmup(spare: Spare): void {
    const warmup = this.warmup;
    if (!warmup) return;
    spare.warming = warmup.artifactKey;
    spare.warmedFor = undefined;
    spare.timer = setTimeout(() => {
      // The app did not answer its warm-up request in time: never run it again in a spare.
      this.noWarmupRequest.add(warmup.artifactKey);
      if (this.warmup?.artifactKey === warmup.artifactKey) this.warmup = { ...warmup, request: false };
      this.discard(spare);
    }, WARMUP_TIMEOUT_MS);
    spare.timer.unref();
    spare.worker.postMessage(warmup);
  }

  private discard(spare: Spare): void {
    const i = this.spares.indexOf(spare);
    if (i >= 0) this.spares.splice(i, 1);
    clearTimeout(spare.timer);
    void spare.worker.terminate();
    this.topUp();
  }

  private topUp(): void {
    while (!this.closed && this.spares.length + this.booting < this.target) {
      this.booting++;
      this.boot().then(
        (worker) => {
          this.booting--;
          if (this.closed) return void worker.terminate();
          const spare: Spare = { worker };
          worker.on('message', (m: WorkerMessage) => {
            if (m.type !== 'warmed' || spare.warming !== m.artifactKey) return;
            clearTimeout(spare.timer);
            spare.warming = undefined;
            spare.warmedFor = m.artifactKey;
            // The artifact changed while this spare was warming: warm again for the current one.
            if (this.warmup && this.warmup.artifactKey !== m.artifactKey) this.startWarmup(spare);
          });
          worker.once('exit', () => this.discard(spare));
          this.spares.push(spare);
          this.startWarmup(spare);
        },
        () => {
          this.booting--;
        },
      );
    }
  }

  private boot(): Promise<Worker> {
    return new Promise((resolve, reject) => {
      const w = new Worker(WORKER_URL, { resourceLimits: WORKER_LIMITS, stdout: false, stderr: false });
      // Spares must not keep the host alive on their own.
      w.unref();
      const onMessage = (m: WorkerMessage) => {
        if (m.type !== 'booted') return;
        w.off('message', onMessage);
        w.off('error', reject);
        this.booted++;
        resolve(w);
      };
      w.on('message', onMessage);
      w.once('error', reject);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const spares = this.spares.splice(0);
    await Promise.all(
      spares.map((s) => {
        clearTimeout(s.timer);
        s.worker.removeAllListeners('exit');
        return s.worker.terminate().catch(() => undefined);
      }),
    );
  }
}
