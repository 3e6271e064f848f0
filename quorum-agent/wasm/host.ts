/**
 * The wasm host: one long-lived process per agent holding many replicas, each with its own Unix-socket
 * endpoint and worker thread. It shares compiled modules between replicas of the same artifact and
 * keeps spare workers booted, so loading a replica costs an instantiation, not a process start.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import type { Logger } from 'pino';
import { ArtifactCache } from './artifact-cache.js';
import { type ReplicaLimits, resolveLimits } from './limits.js';
import { type ReplicaStats, WasmReplica } from './replica.js';
import { WorkerPool } from './worker-pool.js';
import type { InstantiateMode } from './worker-protocol.js';

export interface LoadRequest {
  /** Unique within the host, e.g. `<instanceId>.<slot>`. */
  replicaId: string;
  /** A compiled artifact directory (see compile.ts). */
  artifactDir: string;
  /** Absolute path of the Unix socket to serve the replica on. */
  socketPath: string;
  /** Receives the guest's stdout and stderr. */
  logFile: string;
  env?: Record<string, string>;
  limits?: Partial<ReplicaLimits>;
  mode?: InstantiateMode;
  /** false: load now, instantiate at the first request. Default true. */
  eager?: boolean;
}

export interface LoadResult {
  replicaId: string;
  endpoint: string;
  socketPath: string;
  /** Instantiation time at load (null when deferred to the first request). */
  instantiateMs: number | null;
  /** The replica took over an instance a spare worker had made ahead of need (then instantiateMs is null). */
  adopted: boolean;
  loadMs: number;
}

export interface HostStats {
  pid: number;
  uptimeSec: number;
  replicas: ReplicaStats[];
  artifactsLoaded: number;
  workersBooted: number;
  /** Spare workers booted and warmed, ready to take a replica. */
  readySpares: number;
  memory: NodeJS.MemoryUsage;
}

/** Unix socket paths are limited to 107 bytes on Linux. */
const MAX_SOCKET_PATH = 107;
const REPLICA_ID = /^[\w.:-]{1,200}$/;

export class WasmHostError extends Error {
  constructor(
    readonly code: 'bad-request' | 'exists' | 'not-found' | 'load-failed',
    message: string,
  ) {
    super(message);
  }
}

export class WasmHost {
  private readonly replicas = new Map<string, { replica: WasmReplica; artifactDir: string; memoryBytes: number }>();
  private readonly loading = new Set<string>();
  private readonly artifacts = new ArtifactCache();
  private readonly workers: WorkerPool;
  private readonly started = Date.now();

  constructor(
    private readonly log: Logger,
    opts: { spareWorkers?: number } = {},
  ) {
    this.workers = new WorkerPool(opts.spareWorkers ?? 2);
  }

  async load(req: LoadRequest): Promise<LoadResult> {
    const t = performance.now();
    if (!REPLICA_ID.test(req.replicaId)) throw new WasmHostError('bad-request', 'replicaId must be 1-200 characters of [A-Za-z0-9_.:-]');
    if (!isAbsolute(req.socketPath) || Buffer.byteLength(req.socketPath) > MAX_SOCKET_PATH) {
      throw new WasmHostError('bad-request', `socketPath must be absolute and at most ${MAX_SOCKET_PATH} bytes`);
    }
    if (!isAbsolute(req.logFile)) throw new WasmHostError('bad-request', 'logFile must be absolute');
    if (!existsSync(join(req.artifactDir, 'manifest.json')))
      throw new WasmHostError('bad-request', `no compiled artifact in ${req.artifactDir}`);
    if (this.replicas.has(req.replicaId) || this.loading.has(req.replicaId))
      throw new WasmHostError('exists', `replica ${req.replicaId} is already loaded`);
    let limits: ReplicaLimits;
    try {
      limits = resolveLimits(req.limits);
    } catch (err) {
      throw new WasmHostError('bad-request', `bad limits: ${(err as Error).message.split('\n')[0]}`);
    }
    this.loading.add(req.replicaId);
    try {
      mkdirSync(dirname(req.logFile), { recursive: true });
      let artifact: Awaited<ReturnType<ArtifactCache['acquire']>>;
      try {
        artifact = await this.artifacts.acquire(req.artifactDir, limits.memoryBytes);
      } catch (err) {
        throw new WasmHostError('load-failed', (err as Error).message);
      }
      this.workers.warmFor(artifact.key, artifact.bindingsUrl, artifact.modules);
      let replica: WasmReplica;
      try {
        replica = await WasmReplica.start({
          id: req.replicaId,
          socketPath: req.socketPath,
          logFile: req.logFile,
          env: req.env ?? {},
          limits,
          mode: req.mode ?? 'per-replica',
          eager: req.eager ?? true,
          artifact,
          workers: this.workers,
          log: this.log,
        });
      } catch (err) {
        this.artifacts.release(req.artifactDir, limits.memoryBytes);
        throw new WasmHostError('load-failed', (err as Error).message);
      }
      this.replicas.set(req.replicaId, { replica, artifactDir: req.artifactDir, memoryBytes: limits.memoryBytes });
      const stats = replica.stats();
      const loadMs = performance.now() - t;
      this.log.info({ replica: req.replicaId, endpoint: replica.endpoint, loadMs: Math.round(loadMs) }, 'wasm replica loaded');
      return {
        replicaId: req.replicaId,
        endpoint: replica.endpoint,
        socketPath: req.socketPath,
        instantiateMs: stats.lastInstantiateMs,
        adopted: stats.adoptedInstances > 0,
        loadMs,
      };
    } finally {
      this.loading.delete(req.replicaId);
    }
  }

  async unload(replicaId: string): Promise<void> {
    const entry = this.replicas.get(replicaId);
    if (!entry) throw new WasmHostError('not-found', `replica ${replicaId} is not loaded`);
    this.replicas.delete(replicaId);
    await entry.replica.stop();
    this.artifacts.release(entry.artifactDir, entry.memoryBytes);
    this.log.info({ replica: replicaId }, 'wasm replica unloaded');
  }

  health(): { ok: boolean; replicas: Record<string, boolean> } {
    const replicas = Object.fromEntries([...this.replicas].map(([id, e]) => [id, e.replica.healthy]));
    return { ok: true, replicas };
  }

  stats(): HostStats {
    return {
      pid: process.pid,
      uptimeSec: Math.round((Date.now() - this.started) / 1000),
      replicas: [...this.replicas.values()].map((e) => e.replica.stats()),
      artifactsLoaded: this.artifacts.size,
      workersBooted: this.workers.booted,
      readySpares: this.workers.readySpares,
      memory: process.memoryUsage(),
    };
  }

  async close(): Promise<void> {
    await Promise.all([...this.replicas.keys()].map((id) => this.unload(id).catch(() => undefined)));
    await this.workers.close();
  }
}
