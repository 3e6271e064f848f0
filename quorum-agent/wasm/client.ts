/**
 * Starts and talks to a wasm host process (host-main.ts) over its IPC channel. This is what the agent's
 * `wasm` driver holds: one per agent.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ControlReply, ControlRequest, HostReady } from './control.js';
import type { HostStats, LoadRequest, LoadResult } from './host.js';

const HOST_MAIN = fileURLToPath(new URL('./host-main.js', import.meta.url));

export class WasmHostRequestError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Pending = { resolve(v: unknown): void; reject(e: Error): void };

export class WasmHostClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    private readonly child: ChildProcess,
    readonly pid: number,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.on('message', (m: ControlReply) => {
      const p = this.pending.get(m?.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new WasmHostRequestError(m.code, m.error));
    });
    void this.exited.then(({ code, signal }) => {
      for (const p of this.pending.values()) p.reject(new WasmHostRequestError('host-exited', `the wasm host exited (${signal ?? code})`));
      this.pending.clear();
    });
  }

  /**
   * Forks the host. `execPath` runs it on another Node binary (tests on the current LTS); `logFile`
   * receives its structured logs.
   */
  static async start(
    opts: { execPath?: string; execArgv?: string[]; logFile?: string; spareWorkers?: number; startTimeoutMs?: number } = {},
  ): Promise<WasmHostClient> {
    const child = fork(HOST_MAIN, [], {
      execPath: opts.execPath ?? process.execPath,
      execArgv: opts.execArgv ?? [],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: {
        ...process.env,
        ALLEGRA_WASM_HOST_LOG: opts.logFile ?? '',
        ALLEGRA_WASM_SPARE_WORKERS: String(opts.spareWorkers ?? 2),
      },
    });
    const ready = await new Promise<HostReady>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error('the wasm host did not start in time'));
      }, opts.startTimeoutMs ?? 15_000);
      child.once('message', (m: HostReady) => {
        clearTimeout(timer);
        if (m?.type === 'ready') resolve(m);
        else reject(new Error('unexpected first message from the wasm host'));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the wasm host exited during start (${signal ?? code})`));
      });
    });
    return new WasmHostClient(child, ready.pid);
  }

  private call<T>(req: ControlRequest extends infer R ? (R extends ControlRequest ? Omit<R, 'id'> : never) : never): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      if (!this.child.connected) return reject(new WasmHostRequestError('host-exited', 'the wasm host is not running'));
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ ...req, id });
    });
  }

  load(load: LoadRequest): Promise<LoadResult> {
    return this.call({ op: 'load', load });
  }

  unload(replicaId: string): Promise<null> {
    return this.call({ op: 'unload', replicaId });
  }

  health(): Promise<{ ok: boolean; replicas: Record<string, boolean> }> {
    return this.call({ op: 'health' });
  }

  stats(): Promise<HostStats> {
    return this.call({ op: 'stats' });
  }

  /** Closes the channel (the host unloads everything and exits), then forces it after `graceMs`. */
  async stop(graceMs = 3_000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    if (this.child.connected) this.child.disconnect();
    else this.child.kill('SIGTERM');
    await this.exited;
    clearTimeout(timer);
  }
}
