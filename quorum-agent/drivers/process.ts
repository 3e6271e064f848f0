/**
 * The `process` driver: runs the instance's command. Where the host can sandbox (see sandbox/support.ts),
 * every replica runs in its own sandbox (sandbox/sandbox.ts) and is reached through its relay socket.
 * Otherwise only what the node's policy allows runs on the host: in its own process group with PORT set to
 * a free loopback port, a clean environment, and (util-linux `setpriv`) a parent-death signal.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { Client } from 'undici';
import { effectiveLimits } from '../../protocol/schemas.js';
import { attachLog } from '../logs.js';
import { freePort } from '../ports.js';
import { scopeName } from '../sandbox/cgroups.js';
import { replicaEnv, sessionEnvironment } from '../sandbox/env.js';
import { Sandbox, SIMPLE_COMMAND } from '../sandbox/sandbox.js';
import { describeSupport, placement, probeSandbox, type SandboxPolicyOptions, type SandboxSupport } from '../sandbox/support.js';
import { DEFAULT_UID_RANGE, UidAllocator, type UidRange } from '../sandbox/uids.js';
import { freeze, processGroup } from '../volume/freeze.js';
import {
  type Driver,
  type ExecRequest,
  type ExecSession,
  type ExitInfo,
  type ReplicaHandle,
  type ReplicaLaunch,
  ReplicaRefused,
} from './driver.js';
import { execSession } from './exec-session.js';
import { probeHealth } from './health-probe.js';

/**
 * PORT of a sandboxed replica whose instance sets none. Every sandbox has its own loopback, so all can use
 * the same one; 3000 is what the demo app and `allegra expose --port 3000` in the README assume.
 */
export const DEFAULT_APP_PORT = 3000;

export interface ProcessDriverOptions {
  support: SandboxSupport;
  /** Present when `support.ok`. */
  sandbox?: Sandbox;
  policy?: SandboxPolicyOptions;
  /** Where unsandboxed replicas get their ALLEGRA_DATA_DIR (`<dataRoot>/replicas/<instance>/<slot>/data`). */
  dataRoot: string;
  /** Path probed by the health check; any HTTP answer below 500 counts as healthy. */
  healthPath?: string;
  healthTimeoutMs?: number;
  /** Whether util-linux setpriv exists, for the parent-death signal of unsandboxed replicas. */
  hasSetpriv?: boolean;
}

export class ProcessDriver implements Driver {
  readonly name = 'process' as const;
  constructor(private readonly opts: ProcessDriverOptions) {}

  async start(launch: ReplicaLaunch): Promise<ReplicaHandle> {
    const where = placement(this.opts.support, this.opts.policy ?? {}, launch.owner);
    if (where.mode === 'refuse') throw new ReplicaRefused(where.reason);
    mkdirSync(dirname(launch.logFile), { recursive: true });
    return where.mode === 'sandbox' && this.opts.sandbox ? this.startSandboxed(launch, this.opts.sandbox) : this.startOnHost(launch);
  }

  /** Readies a sandboxed start of `instanceId` from `workDir` (see Sandbox.prepare); nothing unsandboxed. */
  async prepare(instanceId: string, owner: string, workDir: string): Promise<void> {
    const where = placement(this.opts.support, this.opts.policy ?? {}, owner);
    if (where.mode === 'sandbox' && this.opts.sandbox) await this.opts.sandbox.prepare(instanceId, workDir);
  }

  /** The uid an instance's sandboxed replicas run as (undefined: it runs unsandboxed here, or not yet). */
  uidOf(instanceId: string): number | undefined {
    return this.opts.sandbox?.uids.get(instanceId);
  }

  /** After every replica stopped (agent shutdown). */
  async close(): Promise<void> {
    await this.opts.sandbox?.close();
  }

  async destroy(instanceId: string): Promise<void> {
    if (this.opts.sandbox) await this.opts.sandbox.destroy(instanceId);
    // Unsandboxed replicas' data dirs are the only per-instance state kept without a sandbox.
    else rmSync(join(this.opts.dataRoot, 'replicas', instanceId), { recursive: true, force: true });
  }

  private async startSandboxed(launch: ReplicaLaunch, sandbox: Sandbox): Promise<ReplicaHandle> {
    const proc = await sandbox.start({
      instanceId: launch.instanceId,
      instanceName: launch.instanceName,
      slot: launch.slot,
      artifactDir: launch.workDir,
      cmd: launch.cmd,
      env: launch.env,
      port: launch.listenPort || DEFAULT_APP_PORT,
      limits: effectiveLimits(launch.limits),
      logFile: launch.logFile,
      exposed: launch.exposed,
      stateUrl: launch.stateUrl,
      ...(launch.volumeDir ? { volumeDir: launch.volumeDir } : {}),
    });
    const client = new Client('http://localhost', { socketPath: proc.socketPath, pipelining: 0 });
    void proc.exited.then(() => client.close().catch(() => {}));
    const exec = async (req: ExecRequest) => execSession(await proc.exec(req.argv, req.env));
    return {
      ...this.handle(proc.endpoint, proc.pid, proc.exited, (graceMs) => proc.stop(graceMs), exec, client),
      pause: () => proc.pause(),
      enter: () => proc.enter(),
    };
  }

  private async startOnHost(launch: ReplicaLaunch): Promise<ReplicaHandle> {
    // The instance's own --port when it set one (two replicas on one host then collide, and the second
    // says so in its output); else a free loopback port, as $PORT.
    const port = launch.listenPort || (await freePort());
    const dataDir = join(this.opts.dataRoot, 'replicas', launch.instanceId, String(launch.slot), 'data');
    mkdirSync(dataDir, { recursive: true });
    chmodSync(dataDir, 0o700);
    const stateUrl = launch.hostStateUrl ? await launch.hostStateUrl() : undefined;
    const env = replicaEnv({
      env: launch.env,
      port,
      ...(stateUrl ? { stateUrl } : {}),
      instanceName: launch.instanceName,
      instanceId: launch.instanceId,
      slot: launch.slot,
      dataDir,
      ...(launch.volumeDir ? { volumeDir: launch.volumeDir } : {}),
      path: process.env.PATH,
    });
    // A simple command replaces the shell (exec), so the replica's pid is the app itself and the
    // parent-death signal applies to the app; compound commands keep the shell as the group leader.
    const script = SIMPLE_COMMAND.test(launch.cmd) ? `exec ${launch.cmd}` : launch.cmd;
    const argv = this.opts.hasSetpriv ? ['setpriv', '--pdeathsig', 'KILL', '--', 'sh', '-c', script] : ['sh', '-c', script];
    const child = spawn(argv[0] as string, argv.slice(1), { cwd: launch.workDir, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    attachLog(launch.logFile, child.stdout, child.stderr);
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    let done = false;
    void exited.then(() => {
      done = true;
    });
    const pid = child.pid ?? null;
    const signalGroup = (signal: NodeJS.Signals, evenAfterExit = false) => {
      if (pid === null || (done && !evenAfterExit)) return;
      try {
        process.kill(-pid, signal);
      } catch {
        try {
          child.kill(signal);
        } catch {
          /* already gone */
        }
      }
    };
    // Unsandboxed, a command runs on the host as the agent does, in the replica's directory and environment.
    const exec = async (req: ExecRequest): Promise<ExecSession> => {
      if (done) throw new Error('the replica is not running');
      const [file, ...args] = req.argv;
      if (!file) throw new Error('exec needs a command');
      const sessionEnv = sessionEnvironment(env, req.env ?? {});
      return execSession(spawn(file, args, { cwd: launch.workDir, env: sessionEnv, stdio: ['pipe', 'pipe', 'pipe'], detached: true }));
    };
    const stop = async (graceMs: number) => {
      if (done) return;
      signalGroup('SIGTERM');
      const timer = setTimeout(() => signalGroup('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
      // Children of the shell that ignored SIGTERM must not outlive their replica.
      signalGroup('SIGKILL', true);
    };
    const handle = this.handle(`http://127.0.0.1:${port}`, pid, exited, stop, exec);
    // Unsandboxed, the replica is its process group (a process that leaves it is not paused).
    return pid === null ? handle : { ...handle, pause: () => freeze(() => processGroup(pid)) };
  }

  private handle(
    endpoint: string,
    pid: number | null,
    exited: Promise<ExitInfo>,
    stop: (graceMs: number) => Promise<void>,
    exec: (req: ExecRequest) => Promise<ExecSession>,
    dispatcher?: Client,
  ): ReplicaHandle {
    let done = false;
    void exited.then(() => {
      done = true;
    });
    const path = this.opts.healthPath ?? '/';
    const timeout = this.opts.healthTimeoutMs ?? 1_000;
    const target = endpoint.startsWith('unix:')
      ? { socketPath: endpoint.slice('unix:'.length), ...(dispatcher ? { dispatcher } : {}) }
      : { url: endpoint };
    return {
      endpoint,
      pid,
      exited,
      health: async () => !done && (await probeHealth(target, path, timeout)),
      stop: async (graceMs = 5_000) => stop(graceMs),
      exec,
    };
  }
}

/**
 * Finds out whether this host can sandbox replicas, says so in the log (bubblewrap version, cgroup version
 * and directories, uid range, or why not and what the node will run instead), and builds the driver. A host
 * that cannot (not root, no bubblewrap/socat/setpriv, no namespaces or writable cgroups) runs only what the
 * operator allowed: trusted owners' instances, or all with --allow-unsandboxed. `hosted` lists the
 * instances the sandbox keeps a uid for (deleted ones are destroyed by the agent).
 */
export async function openProcessDriver(o: {
  dataDir: string;
  nodeId: string;
  policy: SandboxPolicyOptions & { uidRange?: UidRange };
  log: Logger;
}): Promise<{ driver: ProcessDriver; support: SandboxSupport; hosted: string[] }> {
  const { log, policy } = o;
  const root = join(o.dataDir, 'sandbox');
  const uidRange = policy.uidRange ?? DEFAULT_UID_RANGE;
  let support = probeSandbox();
  let sandbox: Sandbox | undefined;
  if (support.ok) {
    try {
      sandbox = new Sandbox(support, root, new UidAllocator(join(root, 'uids.json'), uidRange), scopeName(o.nodeId), log);
      await sandbox.open();
    } catch (err) {
      support = { ok: false, reason: `cannot set up replica cgroups or uids: ${(err as Error).message}` };
      sandbox = undefined;
    }
  }
  const trusted = policy.trustedOwners ?? [];
  if (support.ok) {
    log.info({ ...describeSupport(support), uids: `${uidRange.first}-${uidRange.first + uidRange.count - 1}` }, 'replicas run sandboxed');
  } else if (policy.allowUnsandboxed) {
    log.warn(
      { reason: support.reason },
      'THIS NODE CANNOT SANDBOX REPLICAS AND RUNS EVERY INSTANCE UNSANDBOXED (--allow-unsandboxed): tenant code runs as the agent, with access to its files and network',
    );
  } else if (trusted.length > 0) {
    log.warn(
      { reason: support.reason, trustedOwners: trusted },
      'this node cannot sandbox replicas: it runs only its trusted owners’ instances, unsandboxed',
    );
  } else {
    log.warn(
      { reason: support.reason },
      'this node cannot sandbox replicas and refuses every instance (pass --trusted-owner KEY or --allow-unsandboxed to run some unsandboxed)',
    );
  }
  const hasSetpriv = process.platform === 'linux' && spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;
  return { driver: new ProcessDriver({ support, sandbox, policy, dataRoot: root, hasSetpriv }), support, hosted: sandbox?.known() ?? [] };
}
