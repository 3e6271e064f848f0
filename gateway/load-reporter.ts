/**
 * The gateway's load signals for the autoscaler: per instance, the requests in flight (admitted or queued
 * at the route gate, sampled every 50 ms and averaged over a 1 s tick), the requests per second admitted
 * in the tick, and the requests the activator holds for an instance without a replica. One record per
 * instance and gateway (`load/<instanceId>/<gatewayId>`) under the gateway's lease, so a gateway that dies
 * takes its signals with it.
 *
 * Written every tick while an instance has traffic, once more with zeros when it stops, and deleted after
 * a quiet minute. A change in held requests is written at once: it is how a sleeping instance is woken.
 * Nothing here runs per request: the forwarder counts admissions in a map (`Forwarder.takeAdmitted`).
 */
import type { Logger } from 'pino';
import { keys } from '../protocol/keys.js';
import type { Registry } from '../protocol/registry.js';
import type { LoadRecord } from '../protocol/types.js';

export interface LoadReporterOptions {
  registry: Registry;
  gatewayId: string;
  /** The gateway's lease (NodeLink's), or undefined while it is being re-granted. */
  leaseId: () => string | undefined;
  /** In flight and queued per instance id at the route gate, now. */
  inFlight: () => Iterable<[string, { inFlight: number; queued: number }]>;
  /** Requests admitted per instance id since the last call (the counter is reset by the read). */
  takeAdmitted: () => Map<string, number>;
  /** Requests held by the activator per instance id, now. */
  held: () => ReadonlyMap<string, number>;
  log: Logger;
  tickMs?: number;
  sampleMs?: number;
  /** How long an instance stays quiet before its record is deleted. */
  forgetAfterMs?: number;
}

interface Entry {
  /** Sum of the concurrency sampled this tick (divided by the tick's sample count). */
  sum: number;
  /** Last time the instance had any traffic, and whether its last written record was all zeros. */
  activeAt: number;
  wroteZero: boolean;
  writing: boolean;
  dirty: boolean;
}

export class LoadReporter {
  private readonly entries = new Map<string, Entry>();
  private tickTimer: NodeJS.Timeout | null = null;
  private sampleTimer: NodeJS.Timeout | null = null;
  private tickStarted = Date.now();
  private tickSamples = 0;
  private stopped = false;

  constructor(private readonly opts: LoadReporterOptions) {}

  start(): void {
    this.sampleTimer = setInterval(() => this.sample(), this.opts.sampleMs ?? 50);
    this.sampleTimer.unref();
    this.tickTimer = setInterval(() => this.tick(), this.opts.tickMs ?? 1_000);
    this.tickTimer.unref();
  }

  private entry(instanceId: string, now: number): Entry {
    let e = this.entries.get(instanceId);
    if (!e) this.entries.set(instanceId, (e = { sum: 0, activeAt: now, wroteZero: false, writing: false, dirty: false }));
    return e;
  }

  private sample(): void {
    const now = Date.now();
    this.tickSamples++;
    for (const [id, g] of this.opts.inFlight()) {
      const n = g.inFlight + g.queued;
      if (n > 0) this.entry(id, now).sum += n;
    }
  }

  /** The activator's held count of an instance changed: tell the autoscaler now, not at the next tick. */
  heldChanged(instanceId: string): void {
    if (this.stopped) return;
    const now = Date.now();
    const e = this.entry(instanceId, now);
    e.activeAt = now;
    this.write(instanceId, e, { concurrency: e.sum / Math.max(1, this.tickSamples), rps: 0, windowMs: now - this.tickStarted });
  }

  private tick(): void {
    const now = Date.now();
    const windowMs = Math.max(1, now - this.tickStarted);
    const samples = Math.max(1, this.tickSamples);
    this.tickStarted = now;
    this.tickSamples = 0;
    const admitted = this.opts.takeAdmitted();
    const held = this.opts.held();
    for (const id of [...admitted.keys(), ...held.keys()]) this.entry(id, now);
    const forgetAfter = this.opts.forgetAfterMs ?? 60_000;
    for (const [id, e] of this.entries) {
      const concurrency = e.sum / samples;
      const rps = ((admitted.get(id) ?? 0) * 1000) / windowMs;
      e.sum = 0;
      const active = concurrency > 0 || rps > 0 || (held.get(id) ?? 0) > 0;
      if (active) {
        e.activeAt = now;
        e.wroteZero = false;
        this.write(id, e, { concurrency, rps, windowMs });
      } else if (!e.wroteZero) {
        e.wroteZero = true;
        this.write(id, e, { concurrency: 0, rps: 0, windowMs });
      } else if (now - e.activeAt > forgetAfter && !e.writing) {
        this.entries.delete(id);
        void this.opts.registry.delete(keys.load(id, this.opts.gatewayId)).catch(() => {});
      }
    }
  }

  private write(instanceId: string, e: Entry, figures: Pick<LoadRecord, 'concurrency' | 'rps' | 'windowMs'>): void {
    const lease = this.opts.leaseId();
    if (!lease || this.stopped) return;
    if (e.writing) {
      // One write at a time per record; the latest figures follow as soon as it is done.
      e.dirty = true;
      return;
    }
    const record: LoadRecord = {
      instanceId,
      gateway: this.opts.gatewayId,
      concurrency: Math.round(figures.concurrency * 100) / 100,
      held: this.opts.held().get(instanceId) ?? 0,
      rps: Math.round(figures.rps * 100) / 100,
      windowMs: Math.min(60_000, Math.round(figures.windowMs)),
      updatedAt: Date.now(),
    };
    e.writing = true;
    this.opts.registry
      .put(keys.load(instanceId, this.opts.gatewayId), JSON.stringify(record), { lease })
      .catch((err) => this.opts.log.debug({ err, instanceId }, 'could not publish a load signal'))
      .finally(() => {
        e.writing = false;
        if (e.dirty) {
          e.dirty = false;
          this.write(instanceId, e, figures);
        }
      });
  }

  stop(): void {
    this.stopped = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    if (this.sampleTimer) clearInterval(this.sampleTimer);
  }
}
