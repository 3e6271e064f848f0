/**
 * Meters what this node serves, per instance: requests and bytes through a counting relay in front of each
 * replica (relay.ts), CPU seconds from the replica's cgroup (cpu.ts) and replica-seconds from when each
 * replica ran. Every 10 s (and on stop) it writes the totals that changed as a record signed by this node
 * (protocol/usage.ts); a restarted agent continues from its own last signed record.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { keys } from '../../protocol/keys.js';
import { signRecord, verifyRecord } from '../../protocol/records.js';
import type { Registry } from '../../protocol/registry.js';
import { parseRecord } from '../../protocol/schemas.js';
import type { KeyPair } from '../../protocol/signing.js';
import { type UsageRecord, usageRecord } from '../../protocol/usage.js';
import type { ReplicaHandle, ReplicaLaunch } from '../drivers/driver.js';
import { cgroupCpuSeconds, processCpuSeconds } from './cpu.js';
import { CountingRelay } from './relay.js';

const MAX_SOCKET_PATH = 107;

interface Metered {
  relay: CountingRelay | null;
  cpu: () => Promise<number>;
  startedAt: number;
  lastCpu: number;
  counted: { requests: number; bytesIn: number; bytesOut: number };
  lastTick: number;
}

export interface MeterOptions {
  registry: Registry;
  keyPair: KeyPair;
  nodeId: string;
  dataDir: string;
  log: Logger;
  flushIntervalMs?: number;
}

export class UsageMeter {
  private readonly totals = new Map<string, UsageRecord>();
  private readonly loading = new Map<string, Promise<void>>();
  private readonly running = new Map<Metered, string>();
  private readonly dirty = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private readonly dir: string;

  constructor(private readonly opts: MeterOptions) {
    this.dir = join(opts.dataDir, 'meter');
    mkdirSync(this.dir, { recursive: true, mode: 0o711 });
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.opts.flushIntervalMs ?? 10_000);
    this.timer.unref();
  }

  /** Puts a counting relay in front of a started replica; its handle now publishes the relay's endpoint. */
  async wrap(launch: ReplicaLaunch, handle: ReplicaHandle): Promise<ReplicaHandle> {
    const id = launch.instanceId;
    this.load(id);
    const socketPath = join(this.dir, `${id}.${launch.slot}.${randomBytes(3).toString('hex')}.sock`);
    let relay: CountingRelay | null = null;
    if (handle.endpoint && Buffer.byteLength(socketPath) <= MAX_SOCKET_PATH) {
      try {
        relay = await new CountingRelay(socketPath, handle.endpoint).start();
      } catch (err) {
        this.opts.log.warn({ err, instance: launch.instanceName }, 'could not start the counting relay; the replica is served unmetered');
      }
    }
    const cpu = async () => {
      const target = handle.enter ? await handle.enter() : undefined;
      if (target?.procsFiles[0]) return cgroupCpuSeconds(target.procsFiles[0]);
      return handle.pid ? processCpuSeconds(handle.pid) : 0;
    };
    const now = Date.now();
    const m: Metered = { relay, cpu, startedAt: now, lastCpu: 0, counted: { requests: 0, bytesIn: 0, bytesOut: 0 }, lastTick: now };
    this.running.set(m, id);
    const finish = async () => {
      if (!this.running.has(m)) return;
      await this.sample(m, id);
      this.running.delete(m);
      await relay?.close();
    };
    void handle.exited.then(finish);
    return {
      ...handle,
      endpoint: relay?.endpoint ?? handle.endpoint,
      // What the replica reports of itself (wasm) wins; else what its relay sees: requests, and those in flight.
      figures: () => {
        const own = handle.figures?.();
        if (!relay) return own;
        return { requests: relay.traffic.requests, inFlight: relay.awaiting, ...own };
      },
      stop: async (graceMs) => {
        await this.sample(m, id); // the last CPU reading while the sandbox still exists
        await handle.stop(graceMs);
        await finish();
      },
    };
  }

  /** Adds what a replica did since its last sample to its instance's totals. */
  private async sample(m: Metered, id: string): Promise<void> {
    const total = this.totals.get(id);
    if (!total) return;
    const now = Date.now();
    const cpu = await m.cpu().catch(() => m.lastCpu);
    total.cpuSeconds += Math.max(0, cpu - m.lastCpu);
    m.lastCpu = Math.max(cpu, m.lastCpu);
    total.replicaSeconds += (now - m.lastTick) / 1000;
    m.lastTick = now;
    if (m.relay) {
      const t = m.relay.traffic;
      total.requests += t.requests - m.counted.requests;
      total.bytesIn += t.bytesIn - m.counted.bytesIn;
      total.bytesOut += t.bytesOut - m.counted.bytesOut;
      m.counted = { ...t };
    }
    this.dirty.add(id);
  }

  /** Continues from this node's own last signed record of the instance, if any. */
  private load(id: string): void {
    if (this.totals.has(id) || this.loading.has(id)) return;
    const now = Date.now();
    const fresh: UsageRecord = {
      instanceId: id,
      nodeId: this.opts.nodeId,
      requests: 0,
      bytesIn: 0,
      bytesOut: 0,
      cpuSeconds: 0,
      replicaSeconds: 0,
      since: now,
      updatedAt: now,
      seq: 0,
    };
    this.totals.set(id, fresh);
    this.loading.set(
      id,
      this.opts.registry
        .get(keys.usage(id, this.opts.nodeId))
        .then((kv) => {
          const prev = parseRecord(usageRecord, kv?.value) as UsageRecord | undefined;
          if (!prev || !verifyRecord(prev, this.opts.keyPair.publicKeyHex)) return;
          for (const f of ['requests', 'bytesIn', 'bytesOut', 'cpuSeconds', 'replicaSeconds'] as const) fresh[f] += prev[f];
          fresh.since = prev.since;
          fresh.seq = prev.seq;
        })
        .catch(() => {}),
    );
  }

  /** Samples every running replica and writes the records that changed. */
  async flush(): Promise<void> {
    for (const [m, id] of this.running) await this.sample(m, id);
    for (const id of [...this.dirty]) {
      await this.loading.get(id);
      const total = this.totals.get(id);
      if (!total) continue;
      this.dirty.delete(id);
      const record = signRecord(this.opts.keyPair, { ...total, seq: total.seq + 1, updatedAt: Date.now() });
      try {
        await this.opts.registry.put(keys.usage(id, this.opts.nodeId), JSON.stringify(record));
        total.seq = record.seq;
      } catch (err) {
        this.dirty.add(id);
        this.opts.log.warn({ err, instanceId: id }, 'could not write the usage record; retrying');
      }
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
  }
}
