/**
 * Keeps the replicas this node should run alive: starts what is missing, stops what is no longer wanted,
 * restarts crashed replicas with backoff, probes health on an interval and reports every change of a
 * replica's observable state (endpoint, health, version) through `report`. A new version of a slot is
 * started beside the old one and takes over only once healthy (or after a deadline), so a deploy does not
 * leave a slot without a replica.
 */
import type { Logger } from 'pino';
import type { DriverName, ReplicaRecord } from '../protocol/types.js';
import { type ExitInfo, type ReplicaFigures, type ReplicaHandle, type ReplicaLaunch, ReplicaRefused } from './drivers/driver.js';
import type { DriverSet } from './drivers/set.js';

export interface DesiredReplica {
  instanceId: string;
  instanceName: string;
  slot: number;
  version: number;
  /** Which of the node's drivers runs it. */
  driver: DriverName;
  launch: ReplicaLaunch;
  /**
   * Never two processes of this slot at once (a volume's writer): a new version starts only after the old
   * one stopped, instead of beside it.
   */
  exclusive?: boolean;
  /** How long a stop waits for the replica to exit before it is killed (default 5 s). */
  stopGraceMs?: number;
  /** What the replica runs, as `allegra verify` compares it: the artifact and the spec's hash. */
  attest?: { artifact: string | null; specHash: string };
}

export interface SupervisorOptions {
  nodeId: string;
  drivers: DriverSet;
  log: Logger;
  /** Called with the record to publish, or null when the replica is gone. */
  report: (key: { instanceId: string; slot: number }, record: ReplicaRecord | null) => void;
  healthIntervalMs?: number;
  /** Consecutive failed probes before a running replica is marked unhealthy. */
  unhealthyThreshold?: number;
  /** How long a new version may take to become healthy before it replaces the old one anyway. */
  rolloutDeadlineMs?: number;
  /**
   * A replica whose slot moved to another node while its instance still runs keeps serving this long, so
   * the new one can start first (make-before-break). 0 retires at once.
   */
  retireGraceMs?: number;
  /**
   * A replica whose slot the autoscaler removed (scale-down) is unpublished at once and stopped this much
   * later, so gateways stop sending it requests before it goes and the ones in flight can finish.
   */
  scaleDownDrainMs?: number;
}

class Runner {
  handle: ReplicaHandle | null = null;
  healthy = false;
  restarts = 0;
  failures = 0;
  stopped = false;
  /** Why the replica is not running or not healthy; cleared once it answers. */
  lastError: string | undefined;
  /**
   * When the current process started: for the reason of a replica that never answers, and a starting
   * replica is probed often, so it serves as soon as it answers.
   */
  private startedAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private backoffMs = 200;
  readonly becameHealthy: Promise<void>;
  private markHealthy!: () => void;

  constructor(
    public desired: DesiredReplica,
    private readonly sup: Supervisor,
  ) {
    this.becameHealthy = new Promise((r) => {
      this.markHealthy = r;
    });
    this.done = new Promise((r) => {
      this.markDone = r;
    });
  }

  /** Resolves once stop() has finished: the replica's process and resources are gone. */
  readonly done: Promise<void>;
  private markDone!: () => void;

  /** The start in progress, which stop() waits for so that no replica is started after its runner stopped. */
  private starting: Promise<void> | null = null;

  start(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    const run = this.startOnce().finally(() => {
      if (this.starting === run) this.starting = null;
    });
    this.starting = run;
    return run;
  }

  private async startOnce(): Promise<void> {
    try {
      const driver = this.sup.opts.drivers.get(this.desired.driver);
      if (!driver) throw new ReplicaRefused(`this node does not offer the ${this.desired.driver} driver`);
      this.handle = await driver.start(this.desired.launch);
    } catch (err) {
      const refused = err instanceof ReplicaRefused;
      const why = refused ? `refused: ${(err as Error).message}` : `failed to start: ${(err as Error).message}`;
      const fields = { instance: this.desired.instanceName, slot: this.desired.slot };
      // A refusal repeats on every retry: said once per runner, not every 10 s.
      if (refused && why !== this.lastError) this.sup.opts.log.warn({ ...fields, reason: (err as Error).message }, 'replica refused');
      else if (!refused) this.sup.opts.log.error({ ...fields, err }, 'replica failed to start');
      this.lastError = why;
      this.sup.publish(this);
      this.scheduleRestart();
      return;
    }
    if (this.stopped) return; // stop() is waiting for this start and stops the handle.
    const handle = this.handle;
    this.startedAt = Date.now();
    this.sup.opts.log.info(
      {
        instance: this.desired.instanceName,
        slot: this.desired.slot,
        pid: handle.pid,
        endpoint: handle.endpoint,
        version: this.desired.version,
      },
      'replica started',
    );
    void handle.exited.then((exit) => {
      if (this.handle !== handle || this.stopped) return;
      this.sup.opts.log.warn({ instance: this.desired.instanceName, slot: this.desired.slot, ...exit }, 'replica exited; restarting');
      this.lastError = describeExit(exit);
      this.handle = null;
      this.setHealthy(false);
      this.scheduleRestart();
    });
    this.probeSoon(0);
  }

  private scheduleRestart(): void {
    if (this.stopped) return;
    this.restarts++;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, 10_000);
    this.clearTimer();
    this.timer = setTimeout(() => void this.start(), delay);
  }

  private probeSoon(delayMs: number): void {
    this.clearTimer();
    this.timer = setTimeout(() => void this.probe(), delayMs);
  }

  private async probe(): Promise<void> {
    const handle = this.handle;
    if (!handle || this.stopped) return;
    const ok = await handle.health();
    if (handle !== this.handle || this.stopped) return;
    if (ok) {
      this.failures = 0;
      this.backoffMs = 200;
      this.lastError = undefined;
      this.setHealthy(true);
    } else if (!this.healthy) {
      // Still starting: keep probing quickly until it answers, and say why it is not in rotation once it
      // has had time to listen (the usual cause: the app listens on a fixed port instead of $PORT).
      const silentMs = handle.startupMs ?? SILENT_START_MS;
      if (this.startedAt && Date.now() - this.startedAt > silentMs && this.lastError === undefined) {
        this.lastError = `not answering HTTP ${Math.round(silentMs / 1000)} s after start: the app must listen on 127.0.0.1:$PORT`;
        this.sup.publish(this);
      }
    } else if (++this.failures >= (this.sup.opts.unhealthyThreshold ?? 2)) {
      this.setHealthy(false);
    }
    const interval = this.sup.opts.healthIntervalMs ?? 1_000;
    // Cold starts wait on this probe (a request held by the activator is released on the first healthy
    // replica): every 10 ms for the first seconds of a start, then at most every 200 ms until it answers.
    const starting = Date.now() - this.startedAt < STARTUP_PROBE_MS;
    this.probeSoon(this.healthy ? interval : starting ? 10 : Math.min(interval, 200));
  }

  private setHealthy(healthy: boolean): void {
    const changed = this.healthy !== healthy;
    this.healthy = healthy;
    if (healthy) this.markHealthy();
    if (changed || healthy) this.sup.publish(this);
  }

  /** The published state: the running replica, or (without one) why there is none, if known. */
  record(): ReplicaRecord | null {
    if (!this.handle && this.lastError === undefined) return null;
    return {
      instanceId: this.desired.instanceId,
      nodeId: this.sup.opts.nodeId,
      slot: this.desired.slot,
      endpoint: this.handle?.endpoint ?? '',
      healthy: this.handle ? this.healthy : false,
      version: this.desired.version,
      pid: this.handle?.pid ?? null,
      restarts: this.restarts,
      ...(this.handle?.accel ? { accel: this.handle.accel } : {}),
      ...(this.lastError === undefined ? {} : { lastError: this.lastError.slice(0, 1024) }),
      updatedAt: Date.now(),
    };
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimer();
    try {
      await this.starting;
      await this.handle?.stop(this.desired.stopGraceMs);
    } finally {
      this.handle = null;
      this.markDone();
    }
  }
}

/** How long after a start the replica is probed every 10 ms. */
const STARTUP_PROBE_MS = 5_000;

function describeExit(exit: ExitInfo): string {
  // 137 = 128 + SIGKILL: what a shell reports for a child the kernel's OOM killer (or a kill -9) ended.
  if (exit.signal) return `exited on ${exit.signal}`;
  return exit.code === 137 ? 'exited with code 137 (killed: out of memory or SIGKILL)' : `exited with code ${exit.code}`;
}

/** How long a started replica may stay silent before its status says why it is not served. */
const SILENT_START_MS = 5_000;

const slotKey = (instanceId: string, slot: number) => `${instanceId}/${slot}`;

/** Whether two desired replicas run the same process: same code (work dir), command and environment. */
function sameProcess(a: DesiredReplica, b: DesiredReplica): boolean {
  const runtime = (d: DesiredReplica) =>
    JSON.stringify([d.launch.env, d.launch.limits ?? null, d.launch.listenPort, d.launch.exposed ?? []]);
  return a.driver === b.driver && a.launch.workDir === b.launch.workDir && a.launch.cmd === b.launch.cmd && runtime(a) === runtime(b);
}

export class Supervisor {
  /** The runner whose record is published for each slot. */
  private readonly active = new Map<string, Runner>();
  /** A newer version warming up beside the active runner. */
  private readonly pending = new Map<string, Runner>();
  /** Last published record per slot, to publish only real changes. */
  private readonly published = new Map<string, string>();
  /** Slots no longer wanted here, still serving until their grace period ends. */
  private readonly retiring = new Map<string, NodeJS.Timeout>();
  /** Runners asked to stop whose replica may still be shutting down. */
  private readonly stopping = new Set<Runner>();

  constructor(readonly opts: SupervisorOptions) {}

  get count(): number {
    return this.active.size;
  }

  /**
   * Brings the running set to `desired`. Safe to call often; it only acts on differences. Replicas of
   * instances in `stillRunning` that are no longer wanted here retire after the grace period instead of at
   * once (their slot moved to another node, which needs time to start its replica).
   */
  reconcile(
    desired: DesiredReplica[],
    stillRunning: ReadonlySet<string> = new Set(),
    /** Replicas each instance should have in all: a slot at or past it was scaled away, not moved. */
    counts: ReadonlyMap<string, number> = new Map(),
  ): void {
    const wanted = new Map(desired.map((d) => [slotKey(d.instanceId, d.slot), d]));
    const grace = this.opts.retireGraceMs ?? 10_000;
    for (const [key, runner] of this.active) {
      if (wanted.has(key)) {
        this.cancelRetirement(key);
        continue;
      }
      const count = counts.get(runner.desired.instanceId);
      if (count !== undefined && runner.desired.slot >= count && stillRunning.has(runner.desired.instanceId)) {
        // Scaled down: nobody else starts this slot, so there is nothing to wait for but the gateways.
        this.cancelRetirement(key);
        this.active.delete(key);
        this.retire(runner, key, this.opts.scaleDownDrainMs ?? 1_000);
        continue;
      }
      if (grace > 0 && stillRunning.has(runner.desired.instanceId)) {
        if (!this.retiring.has(key)) {
          const timer = setTimeout(() => {
            this.retiring.delete(key);
            if (this.active.get(key) !== runner) return;
            this.active.delete(key);
            this.retire(runner, key);
          }, grace);
          timer.unref();
          this.retiring.set(key, timer);
        }
        continue;
      }
      this.cancelRetirement(key);
      this.active.delete(key);
      this.retire(runner, key);
    }
    for (const [key, runner] of this.pending) {
      if (!wanted.has(key)) {
        this.pending.delete(key);
        this.stopRunner(runner);
      }
    }
    for (const [key, d] of wanted) {
      const current = this.active.get(key);
      if (!current) {
        const runner = new Runner(d, this);
        this.active.set(key, runner);
        void runner.start();
      } else if (!sameProcess(current.desired, d)) {
        const waiting = this.pending.get(key);
        if (waiting && sameProcess(waiting.desired, d)) continue;
        if (waiting) this.stopRunner(waiting);
        if (d.exclusive) this.replace(key, current, d);
        else this.rollOut(key, d);
      } else if (current.desired.version !== d.version) {
        // The spec changed in ways the replica does not see (domains, replica bounds…): it now runs the
        // new version as it is. Restarting every replica at once for that would drop requests.
        current.desired = d;
        this.publish(current);
      }
    }
  }

  /** Starts the new version beside the old one and swaps once it is healthy or the deadline passes. */
  private rollOut(key: string, d: DesiredReplica): void {
    const next = new Runner(d, this);
    this.pending.set(key, next);
    void next.start();
    const deadline = new Promise<void>((r) => setTimeout(r, this.opts.rolloutDeadlineMs ?? 30_000).unref());
    void Promise.race([next.becameHealthy, deadline]).then(() => {
      if (this.pending.get(key) !== next) return;
      this.pending.delete(key);
      const old = this.active.get(key);
      this.active.set(key, next);
      this.publish(next);
      if (old) this.stopRunner(old);
    });
  }

  /** Break-before-make: the new runner starts once the old one has stopped. */
  private replace(key: string, old: Runner, d: DesiredReplica): void {
    const next = new Runner(d, this);
    this.active.set(key, next);
    this.stopRunner(old);
    void old.done.then(() => {
      if (this.active.get(key) === next) void next.start();
    });
  }

  /** Pauses every process of the replica running in `instanceId`.`slot` (null if none runs or it cannot pause). */
  async pause(instanceId: string, slot: number): Promise<(() => void) | null> {
    const handle = this.active.get(slotKey(instanceId, slot))?.handle;
    return handle?.pause ? handle.pause() : null;
  }

  private cancelRetirement(key: string): void {
    const timer = this.retiring.get(key);
    if (!timer) return;
    clearTimeout(timer);
    this.retiring.delete(key);
  }

  private retire(runner: Runner, key: string, drainMs = 0): void {
    this.published.delete(key);
    this.opts.report({ instanceId: runner.desired.instanceId, slot: runner.desired.slot }, null);
    if (drainMs <= 0) return this.stopRunner(runner);
    // Counted as stopping from now on: drained() and stopAll() wait for it.
    this.stopping.add(runner);
    setTimeout(() => this.stopRunner(runner), drainMs);
  }

  /** Publishes a runner's record if it is the active one for its slot and something changed. */
  publish(runner: Runner): void {
    const key = slotKey(runner.desired.instanceId, runner.desired.slot);
    if (this.active.get(key) !== runner) return;
    const record = runner.record();
    const fingerprint = record ? `${record.endpoint}|${record.healthy}|${record.version}|${record.pid}|${record.lastError ?? ''}` : 'gone';
    if (this.published.get(key) === fingerprint) return;
    this.published.set(key, fingerprint);
    this.opts.report({ instanceId: runner.desired.instanceId, slot: runner.desired.slot }, record);
  }

  /** Where the replica published for `instanceId`.`slot` listens, while it runs here (for the node ingress). */
  endpointOf(instanceId: string, slot: number): string | undefined {
    const handle = this.active.get(slotKey(instanceId, slot))?.handle;
    return handle?.endpoint || undefined;
  }

  /** Every active replica here with what it reports about its own load, grouped by instance. */
  figures(): Map<string, Array<{ slot: number; healthy: boolean } & ReplicaFigures>> {
    const out = new Map<string, Array<{ slot: number; healthy: boolean } & ReplicaFigures>>();
    for (const runner of this.active.values()) {
      const { instanceId, slot } = runner.desired;
      let list = out.get(instanceId);
      if (!list) out.set(instanceId, (list = []));
      list.push({ slot, healthy: runner.healthy, ...(runner.handle?.figures?.() ?? {}) });
    }
    return out;
  }

  /** The replica that serves `instanceId`.`slot` here, while one runs (SSH sessions join it). */
  replicaOf(instanceId: string, slot: number): { handle: ReplicaHandle; desired: DesiredReplica } | undefined {
    const runner = this.active.get(slotKey(instanceId, slot));
    return runner?.handle ? { handle: runner.handle, desired: runner.desired } : undefined;
  }

  /** The replicas of `instanceId` running here, with whether each is healthy (for `allegra verify`). */
  replicasOf(instanceId: string): Array<{ desired: DesiredReplica; healthy: boolean; running: boolean }> {
    return [...this.active.values()]
      .filter((r) => r.desired.instanceId === instanceId)
      .map((r) => ({ desired: r.desired, healthy: r.healthy, running: r.handle !== null }));
  }

  /** Whether a replica of `instanceId` in `slot` is running (or starting) here. */
  runs(instanceId: string, slot: number): boolean {
    return this.active.has(slotKey(instanceId, slot));
  }

  /** Re-sends every current record (after the registry lost them, e.g. a new lease). */
  republishAll(): void {
    this.published.clear();
    for (const runner of this.active.values()) this.publish(runner);
  }

  async stopAll(): Promise<void> {
    for (const timer of this.retiring.values()) clearTimeout(timer);
    this.retiring.clear();
    const all = [...this.active.values(), ...this.pending.values()];
    this.active.clear();
    this.pending.clear();
    for (const r of all) this.stopRunner(r);
    await Promise.all([...this.stopping].map((r) => r.done));
  }

  private stopRunner(runner: Runner): void {
    this.stopping.add(runner);
    void runner.stop().finally(() => this.stopping.delete(runner));
  }

  /**
   * Resolves true once no replica of `instanceId` runs or is shutting down here (what must hold before its
   * directories and uid are released); false if one is still wanted.
   */
  async drained(instanceId: string): Promise<boolean> {
    const of = (runners: Iterable<Runner>) => [...runners].filter((r) => r.desired.instanceId === instanceId);
    if (of(this.active.values()).length > 0 || of(this.pending.values()).length > 0) return false;
    await Promise.all(of(this.stopping).map((r) => r.done));
    return true;
  }
}
