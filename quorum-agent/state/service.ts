/**
 * The state of every instance this node is a quorum member of: a verified copy (copy.ts), a writer
 * (writer.ts) and the API its replicas reach (api.ts) on a socket of the instance's own
 * (`<data>/state/<instanceId>/api.sock`), whose directory the sandbox hands only to that instance's uid. Members keep a copy
 * whether or not they run a replica: every member holds the state and can show it matches.
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from '../../protocol/registry.js';
import { StateApi } from './api.js';
import { type CopyStatus, StateCopy } from './copy.js';
import { type Quota, StateWriter } from './writer.js';

/** The port a replica reaches its state API at, inside its own network namespace. */
export const STATE_PORT = 7777;
export const DEFAULT_STATE_QUOTA: Quota = { maxBytes: 64 * 1024 * 1024, maxKeys: 100_000 };

interface InstanceState {
  copy: StateCopy;
  api: StateApi;
  socketPath: string;
}

export interface StateServiceOptions {
  registry: Registry;
  dataDir: string;
  log: Logger;
  quota?: Quota;
  onStatus: (instanceId: string, status: CopyStatus & { quota: Quota }) => void;
  /** Called when an instance's state became ready (the agent then runs a reconcile pass). */
  onReady?: () => void;
}

export class StateService {
  private readonly instances = new Map<string, Promise<InstanceState>>();
  private readonly started = new Set<string>();
  readonly quota: Quota;

  constructor(private readonly opts: StateServiceOptions) {
    this.quota = opts.quota ?? DEFAULT_STATE_QUOTA;
    mkdirSync(join(opts.dataDir, 'state'), { recursive: true, mode: 0o700 });
  }

  /** In a directory of the instance's own, which the sandbox binds (a recreated socket stays reachable). */
  socketPath(instanceId: string): string {
    return join(this.opts.dataDir, 'state', instanceId, 'api.sock');
  }

  /** Starts keeping (and serving) an instance's state; resolves once its socket accepts connections. */
  ensure(instanceId: string): Promise<InstanceState> {
    let started = this.instances.get(instanceId);
    if (!started) {
      started = this.start(instanceId);
      this.instances.set(instanceId, started);
      started.then(
        () => {
          this.started.add(instanceId);
          this.opts.onReady?.();
        },
        (err) => {
          this.instances.delete(instanceId);
          this.opts.log.warn({ err, instance: instanceId }, 'could not start the instance state; retrying on the next pass');
        },
      );
    }
    return started;
  }

  /** Whether the instance's state is served; starts it if not (never waits: the reconcile pass goes on). */
  ready(instanceId: string): boolean {
    if (this.started.has(instanceId)) return true;
    void this.ensure(instanceId).catch(() => {});
    return false;
  }

  private async start(instanceId: string): Promise<InstanceState> {
    const { registry, log } = this.opts;
    const copy = await new StateCopy(registry, instanceId, log, (status) =>
      this.opts.onStatus(instanceId, { ...status, quota: this.quota }),
    ).start();
    const api = new StateApi({ registry, copy, writer: new StateWriter(registry, copy, this.quota), quota: this.quota, log });
    const socketPath = this.socketPath(instanceId);
    // The directory stays across restarts of this instance's API: the sandbox gave it to the instance's uid.
    mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
    rmSync(socketPath, { force: true });
    await api.listen(socketPath);
    // Who may connect is the directory's to say (0700, the instance's uid); the socket itself is open.
    chmodSync(socketPath, 0o666);
    return { copy, api, socketPath };
  }

  /** The instance's state API on a loopback port, for a replica that runs unsandboxed. */
  async loopbackUrl(instanceId: string): Promise<string> {
    return (await this.ensure(instanceId)).api.listenLoopback();
  }

  status(instanceId: string): Promise<CopyStatus | undefined> {
    const s = this.instances.get(instanceId);
    return s ? s.then((st) => st.copy.status()).catch(() => undefined) : Promise.resolve(undefined);
  }

  held(): string[] {
    return [...this.instances.keys()];
  }

  /** This node no longer holds the instance (deleted, or moved to another quorum). */
  async forget(instanceId: string): Promise<void> {
    const s = this.instances.get(instanceId);
    this.instances.delete(instanceId);
    this.started.delete(instanceId);
    if (!s) return;
    const st = await s.catch(() => undefined);
    if (!st) return;
    st.copy.close();
    await st.api.close();
    rmSync(st.socketPath, { force: true });
  }

  async close(): Promise<void> {
    await Promise.all([...this.instances.keys()].map((id) => this.forget(id)));
  }
}
