/**
 * The `wasm` driver: runs an instance whose code is a fetch() module (a Hono app, a Workers module) as a
 * WebAssembly component in the agent's one long-lived wasm host (quorum-agent/wasm/). A start compiles the
 * artifact once (cached by its hash, shared by every replica and every later start) and loads a replica
 * into the host: its own Unix socket and worker thread, memory and time limits per request. So a replica's
 * cold start is an instantiation in a running process, not a process start.
 *
 * Sandboxed by construction: the guest has no filesystem, no network and no environment beyond the
 * bindings passed here (see the wasm runtime section of docs/ARCHITECTURE.md). There is no process to
 * `exec` into: `exec` says so.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { CompileError, compileApp, hashSource } from '../wasm/compile.js';
import { WasmHostClient, WasmHostRequestError } from '../wasm/index.js';
import type { ReplicaLimits as WasmLimits } from '../wasm/limits.js';
import type { ReplicaStats } from '../wasm/replica.js';
import {
  type Driver,
  ExecUnsupported,
  type ExitInfo,
  type ReplicaFigures,
  type ReplicaHandle,
  type ReplicaLaunch,
  ReplicaRefused,
} from './driver.js';

export interface WasmDriverOptions {
  /** The driver's own directory: replica sockets (`run/`) and the host's log. */
  dataDir: string;
  /** Compiled artifacts; agents on one machine may share one (compiles are content-addressed). */
  cacheDir: string;
  log: Logger;
  /** Default 300 s: componentize-js takes 20–60 s on a busy 2-core machine, more when several compile at once. */
  compileTimeoutMs?: number;
  /** Runs the host on another Node binary (tests on the current LTS). */
  hostExecPath?: string;
  spareWorkers?: number;
  /** How often host statistics are read for the replicas' figures. */
  statsIntervalMs?: number;
}

interface Loaded {
  exit: (info: ExitInfo) => void;
  stats?: ReplicaStats;
}

/** Compile failures that the same bytes will always repeat: remembered, never recompiled. */
const DETERMINISTIC_STAGES = new Set(['entry', 'bundle', 'componentize', 'transpile']);

export class WasmDriver implements Driver {
  readonly name = 'wasm' as const;
  private host: WasmHostClient | null = null;
  private hostStarting: Promise<WasmHostClient> | null = null;
  private readonly loaded = new Map<string, Loaded>();
  private readonly verdicts = new Map<string, string>();
  private statsTimer: NodeJS.Timeout | null = null;
  private generation = 0;
  private closed = false;

  constructor(private readonly opts: WasmDriverOptions) {
    // Sockets of an earlier run are stale: the host that served them is gone.
    rmSync(join(opts.dataDir, 'run'), { recursive: true, force: true });
    mkdirSync(join(opts.dataDir, 'run'), { recursive: true, mode: 0o755 });
  }

  async start(launch: ReplicaLaunch): Promise<ReplicaHandle> {
    if (this.closed) throw new Error('the wasm driver is closed');
    if (!launch.artifact) throw new ReplicaRefused('no code deployed yet (allegra deploy NAME app.js)');
    const compiledDir = await this.compile(launch);
    const host = await this.ensureHost();
    const replicaId = `${launch.instanceId}.${launch.slot}.${++this.generation}`;
    // Unix socket paths are limited to 107 bytes: a short name derived from the replica id.
    const socketPath = join(this.opts.dataDir, 'run', `${createHash('sha256').update(replicaId).digest('hex').slice(0, 20)}.sock`);
    let exit!: (info: ExitInfo) => void;
    const exited = new Promise<ExitInfo>((resolve) => {
      exit = resolve;
    });
    const entry: Loaded = { exit };
    this.loaded.set(replicaId, entry);
    try {
      const result = await host.load({
        replicaId,
        artifactDir: compiledDir,
        socketPath,
        logFile: launch.logFile,
        env: wasmEnv(launch),
        limits: wasmLimits(launch),
        eager: true,
      });
      this.opts.log.debug({ replica: replicaId, loadMs: Math.round(result.loadMs), adopted: result.adopted }, 'wasm replica loaded');
    } catch (err) {
      this.loaded.delete(replicaId);
      if (err instanceof WasmHostRequestError && err.code === 'bad-request') throw new ReplicaRefused(err.message);
      throw err;
    }
    void host.exited.then((info) => this.forget(replicaId, info));
    this.watchStats();
    let stopped = false;
    return {
      endpoint: `unix:${socketPath}`,
      pid: null,
      exited,
      health: async () => {
        if (!this.loaded.has(replicaId)) return false;
        try {
          return (await host.health()).replicas[replicaId] === true;
        } catch {
          return false;
        }
      },
      stop: async () => {
        if (stopped) return exited.then(() => undefined);
        stopped = true;
        try {
          await host.unload(replicaId);
        } catch (err) {
          if (!(err instanceof WasmHostRequestError)) throw err;
          // not-found or host-exited: the replica is gone either way.
        }
        this.forget(replicaId, { code: 0, signal: null });
        await exited;
      },
      exec: async () => {
        throw new ExecUnsupported(
          'wasm replicas have no processes or shell to run a command in: the app is a WebAssembly instance (use allegra logs to see its output)',
        );
      },
      figures: (): ReplicaFigures | undefined => {
        const s = this.loaded.get(replicaId)?.stats;
        return s ? { inFlight: s.inFlight, queued: s.queued, requests: s.requests, memoryBytes: s.memoryBytes } : undefined;
      },
    };
  }

  private forget(replicaId: string, info: ExitInfo): void {
    const entry = this.loaded.get(replicaId);
    if (!entry) return;
    this.loaded.delete(replicaId);
    entry.exit(info);
    if (this.loaded.size === 0 && this.statsTimer) {
      clearInterval(this.statsTimer);
      this.statsTimer = null;
    }
  }

  /** Compiles the artifact (or finds it in the cache); a compile error the same bytes would repeat is a refusal. */
  private async compile(launch: ReplicaLaunch): Promise<string> {
    const sha256 = launch.artifact ?? hashSource(launch.workDir);
    const verdict = this.verdicts.get(sha256);
    if (verdict) throw new ReplicaRefused(verdict);
    try {
      const compiled = await compileApp({
        source: launch.workDir,
        cacheDir: this.opts.cacheDir,
        sha256,
        timeoutMs: this.opts.compileTimeoutMs ?? 300_000,
        onProgress: (stage) => this.opts.log.debug({ instance: launch.instanceName, stage }, 'compiling wasm app'),
      });
      if (!compiled.cached)
        this.opts.log.info({ instance: launch.instanceName, stageMs: compiled.manifest.stageMs }, 'compiled wasm app to a component');
      return compiled.dir;
    } catch (err) {
      if (err instanceof CompileError && DETERMINISTIC_STAGES.has(err.stage)) {
        const why = `the app does not compile to WebAssembly (${err.stage}): ${err.message}`;
        if (this.verdicts.size > 1_000) this.verdicts.clear();
        this.verdicts.set(sha256, why);
        throw new ReplicaRefused(why);
      }
      throw err;
    }
  }

  /** The host process, started on the first replica and again after it exited. */
  private ensureHost(): Promise<WasmHostClient> {
    if (this.host) return Promise.resolve(this.host);
    this.hostStarting ??= WasmHostClient.start({
      logFile: join(this.opts.dataDir, 'host.log'),
      spareWorkers: this.opts.spareWorkers ?? 2,
      ...(this.opts.hostExecPath ? { execPath: this.opts.hostExecPath } : {}),
    })
      .then((host) => {
        this.host = host;
        this.opts.log.info({ pid: host.pid }, 'wasm host started');
        void host.exited.then((info) => {
          if (this.host === host) this.host = null;
          if (!this.closed) this.opts.log.warn({ ...info }, 'wasm host exited; its replicas restart in a new one');
        });
        return host;
      })
      .finally(() => {
        this.hostStarting = null;
      });
    return this.hostStarting;
  }

  /** Reads the host's per-replica statistics while replicas are loaded (their figures for load signals). */
  private watchStats(): void {
    if (this.statsTimer) return;
    this.statsTimer = setInterval(() => {
      const host = this.host;
      if (!host) return;
      host.stats().then(
        (stats) => {
          for (const s of stats.replicas) {
            const entry = this.loaded.get(s.id);
            if (entry) entry.stats = s;
          }
        },
        () => {},
      );
    }, this.opts.statsIntervalMs ?? 1_000);
    this.statsTimer.unref();
  }

  /** Compiled artifacts are content-addressed and shared: nothing is kept per instance. */
  async destroy(_instanceId: string): Promise<void> {}

  async close(): Promise<void> {
    this.closed = true;
    if (this.statsTimer) clearInterval(this.statsTimer);
    const host = this.host ?? (await this.hostStarting?.catch(() => null));
    await host?.stop();
    for (const [id] of this.loaded) this.forget(id, { code: null, signal: 'SIGTERM' });
  }
}

/** What the app sees as `env`: the instance's own bindings and the network's ALLEGRA_* names (no PORT, no paths). */
export function wasmEnv(launch: ReplicaLaunch): Record<string, string> {
  const own = Object.fromEntries(Object.entries(launch.env).filter(([k]) => !k.startsWith('ALLEGRA_')));
  return { ...own, ALLEGRA_INSTANCE: launch.instanceName, ALLEGRA_INSTANCE_ID: launch.instanceId, ALLEGRA_REPLICA: String(launch.slot) };
}

/** The spec's memory limit applies to the instance's linear memory; the wasm runtime's defaults fill the rest. */
export function wasmLimits(launch: ReplicaLaunch): Partial<WasmLimits> {
  const memoryMb = launch.limits?.memoryMb;
  return memoryMb === undefined ? {} : { memoryBytes: Math.min(memoryMb * 1024 * 1024, 4 * 1024 * 1024 * 1024 - 65536) };
}
