/**
 * Runs replicas in sandboxes: per-instance uid, per-replica directories and cgroups, bubblewrap namespaces,
 * the relay socket as the endpoint. Drivers (process today; SSH sessions and other drivers later) use this
 * module, not the pieces behind it.
 *
 * Host layout under `root` (inside the agent's data dir, which no replica ever sees):
 *   replicas/<instance>/<slot>/data   ALLEGRA_DATA_DIR of that replica slot (kept across its restarts)
 *   run/<instance>.<slot>.<gen>/      one start: passwd, group (root-owned) and sock/http.sock (the relay)
 *   uids.json                         instance → uid
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { lchown, lstat, readdir, readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { unixEndpoint } from '../../gateway/dial.js';
import { attachLog } from '../logs.js';
import { enterArgv } from '../ssh/enter.js';
import { freeze, type Thaw } from '../volume/freeze.js';
import { bwrapArgv, type ExposedSocket, INSIDE, identityFiles, inCgroups } from './bwrap.js';
import { CgroupScope, type Limits } from './cgroups.js';
import { replicaEnv, sessionEnvironment } from './env.js';
import type { SandboxSupport } from './support.js';
import type { UidAllocator } from './uids.js';

/** No shell control operators, subshells or command substitution: safe to prefix with `exec`. */
export const SIMPLE_COMMAND = /^[^;&|()`\n]+$/;

/** Longest Unix socket path Linux accepts (sun_path is 108 bytes with the terminating NUL). */
const MAX_SOCKET_PATH = 107;

export interface SandboxRequest {
  instanceId: string;
  instanceName: string;
  slot: number;
  artifactDir: string;
  cmd: string;
  env: Record<string, string>;
  port: number;
  limits: Limits;
  logFile: string;
  exposed?: ExposedSocket[];
  stateUrl?: string;
  /** Host directory bound read-write at /volume (ALLEGRA_VOLUME_DIR), handed to the instance's uid. */
  volumeDir?: string;
}

export interface SandboxedProcess {
  /** Host pid of the outer bwrap: SIGKILL it and the whole sandbox dies. */
  pid: number;
  endpoint: string;
  socketPath: string;
  uid: number;
  /** Resolves after the sandbox exited and its cgroup and run directory are gone. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM to the app's process group, SIGKILL to the sandbox after `graceMs`. */
  stop(graceMs: number): Promise<void>;
  /** Stops every process in the replica's cgroup until the returned function resumes them. */
  pause(): Promise<Thaw>;
  /**
   * Starts a command inside the running sandbox: its namespaces, root, uid and cgroups (so it counts against
   * the replica's limits), with the replica's environment plus `env`. It dies with the sandbox.
   */
  exec(argv: string[], env?: Record<string, string>): Promise<ChildProcess>;
  /** What a process needs to join this running sandbox (SSH sessions); undefined once it has exited. */
  enter(): Promise<EnterTarget | undefined>;
}

/** A running sandbox as a process joins it: its namespaces (through its init), its cgroups and its ids. */
export interface EnterTarget {
  /** Host pid of the sandbox's init (pid 1 inside): nsenter joins its namespaces. */
  initPid: number;
  /** The `cgroup.procs` files of the replica's cgroups: a joining process is counted and limited with it. */
  procsFiles: string[];
  uid: number;
  gid: number;
  /** Tools on the host that enter it. */
  setpriv: string;
  /** The replica's own environment: a session inside starts from it (sessionEnvironment). */
  env: Record<string, string>;
}

export class Sandbox {
  private readonly scope: CgroupScope;
  /** `${dir}:${uid}` of artifact directories already handed to their instance's uid. */
  private readonly owned = new Set<string>();

  constructor(
    private readonly support: Extract<SandboxSupport, { ok: true }>,
    private readonly root: string,
    readonly uids: UidAllocator,
    scopeName: string,
    private readonly log: Logger,
  ) {
    this.scope = new CgroupScope(support.cgroups, scopeName);
  }

  /** Creates the cgroup scope and removes what an earlier run of this agent left (cgroups, run dirs). */
  async open(): Promise<void> {
    await this.scope.open();
    rmSync(join(this.root, 'run'), { recursive: true, force: true });
    mkdirSync(join(this.root, 'run'), { recursive: true, mode: 0o755 });
  }

  /** After the agent's replicas stopped: removes its cgroup scope. */
  async close(): Promise<void> {
    await this.scope.close();
  }

  replicaDataDir(instanceId: string, slot: number): string {
    return join(this.root, 'replicas', instanceId, String(slot), 'data');
  }

  async start(req: SandboxRequest): Promise<SandboxedProcess> {
    const uid = this.uids.allocate(req.instanceId);
    const gid = uid;
    await this.handOver(req.artifactDir, uid);
    const dataDir = this.replicaDataDir(req.instanceId, req.slot);
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    chownSync(dataDir, uid, gid);
    // A restored volume is written by the agent: its files become the instance's (links never followed).
    if (req.volumeDir) await chownTree(req.volumeDir, uid);

    const name = `${req.instanceId}.${req.slot}.${randomBytes(3).toString('hex')}`;
    const runDir = join(this.root, 'run', name);
    const sockDir = join(runDir, 'sock');
    const socketPath = join(sockDir, 'http.sock');
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH)
      throw new Error(`the relay socket path ${socketPath} is longer than ${MAX_SOCKET_PATH} bytes: give the agent a shorter --data dir`);
    mkdirSync(sockDir, { recursive: true, mode: 0o711 });
    chownSync(sockDir, uid, gid);
    const ids = identityFiles(uid, gid);
    writeFileSync(join(runDir, 'passwd'), ids.passwd, { mode: 0o644 });
    writeFileSync(join(runDir, 'group'), ids.group, { mode: 0o644 });

    // An exposed socket serves this instance alone (its state API): its directory (the socket's own) goes to
    // the instance's uid with mode 0700, so the relay inside (running as that uid) may connect to whatever
    // socket the agent keeps there, and no other tenant's uid may.
    for (const e of req.exposed ?? []) {
      const dir = dirname(e.hostPath);
      // The whole directory goes to the tenant: never one that holds anything but this socket.
      const others = readdirSync(dir).filter((f) => f !== basename(e.hostPath));
      if (others.length > 0) {
        rmSync(runDir, { recursive: true, force: true });
        throw new Error(`exposed socket ${e.hostPath} must be alone in its directory (found ${others[0]})`);
      }
      chownSync(dir, uid, gid);
      chmodSync(dir, 0o700);
    }
    const procs = this.scope.create(name, req.limits);
    const cleanup = async () => {
      if (!(await this.scope.remove(name))) this.log.warn({ cgroup: name }, 'replica cgroup stayed busy after kill');
      rmSync(runDir, { recursive: true, force: true });
    };
    const argv = inCgroups(
      procs,
      bwrapArgv({
        tools: this.support.tools,
        system: this.support.system,
        artifactDir: req.artifactDir,
        dataDir,
        ...(req.volumeDir ? { volumeDir: req.volumeDir } : {}),
        runDir: sockDir,
        passwdFile: join(runDir, 'passwd'),
        groupFile: join(runDir, 'group'),
        uid,
        gid,
        hostname: `${req.instanceName}-${req.slot}`,
        port: req.port,
        // A simple command replaces its shell, one process less per replica.
        cmd: SIMPLE_COMMAND.test(req.cmd) ? `exec ${req.cmd}` : req.cmd,
        exposed: req.exposed,
        infoFd: 3,
      }),
    );
    const env = replicaEnv({
      env: req.env,
      port: req.port,
      instanceName: req.instanceName,
      instanceId: req.instanceId,
      slot: req.slot,
      dataDir: INSIDE.data,
      stateUrl: req.stateUrl,
      ...(req.volumeDir ? { volumeDir: INSIDE.volume } : {}),
    });
    let child: ChildProcess;
    try {
      // Output goes through the agent, which stamps each line and keeps the file bounded (logs.ts).
      child = spawn(argv[0] as string, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe', 'pipe'], detached: true });
    } catch (err) {
      await cleanup();
      throw err;
    }
    attachLog(req.logFile, child.stdout, child.stderr);
    const exitedRaw = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    const exited = exitedRaw.then(async (exit) => {
      await cleanup();
      return exit;
    });
    const initPid = readInitPid(child);
    const pid = child.pid;
    if (pid === undefined) {
      await exited;
      throw new Error(`could not start ${argv[0]}`);
    }
    let done = false;
    void exitedRaw.then(() => {
      done = true;
    });
    const kill = (target: number, signal: NodeJS.Signals) => {
      try {
        process.kill(target, signal);
      } catch {
        /* gone */
      }
    };
    return {
      pid,
      endpoint: unixEndpoint(socketPath),
      socketPath,
      uid,
      exited,
      pause: () => freeze(() => this.scope.pids(name)),
      enter: async () => {
        const init = await initPid;
        return done || init === undefined
          ? undefined
          : { initPid: init, procsFiles: procs, uid, gid, setpriv: this.support.tools.setpriv, env };
      },
      exec: async (command, extra = {}) => {
        const init = await initPid;
        if (done || init === undefined) throw new Error('the replica is not running');
        // The same way in as SSH sessions (ssh/enter.ts: cgroups, namespaces, then the instance's uid).
        const full = enterArgv(
          { initPid: init, procsFiles: procs, uid, gid, setpriv: this.support.tools.setpriv, env },
          command,
          this.support.tools.nsenter,
        );
        // Its own process group: kill(-pid) reaches nsenter and the command it forked inside.
        return spawn(full[0] as string, full.slice(1), {
          env: sessionEnvironment(env, extra),
          stdio: ['pipe', 'pipe', 'pipe'],
          detached: true,
        });
      },
      stop: async (graceMs) => {
        if (!done) {
          // The init script (bwrap's init's only child) forwards SIGTERM to the app's whole process group.
          const init = await initPid;
          const script = init === undefined ? undefined : await childrenOf(init);
          if (script?.[0] !== undefined) kill(script[0], 'SIGTERM');
          else kill(pid, 'SIGKILL');
          const timer = setTimeout(() => kill(pid, 'SIGKILL'), graceMs);
          await exitedRaw;
          clearTimeout(timer);
        }
        await exited;
      },
    };
  }

  /**
   * Does ahead of time what a first start would (the instance's uid, its artifact handed to it), so a
   * standby that must take over — a volume's next writer — starts as fast as a restart.
   */
  async prepare(instanceId: string, artifactDir: string): Promise<void> {
    await this.handOver(artifactDir, this.uids.allocate(instanceId));
  }

  /**
   * Gives the instance's uid its artifact directory, once per directory: the mount is read-only, so
   * owning the files lets the replica read them and change nothing. Links are never followed, and a
   * file with several hard links (one could lead outside the directory) keeps its owner.
   */
  private async handOver(dir: string, uid: number): Promise<void> {
    const key = `${dir}:${uid}`;
    if (this.owned.has(key)) return;
    const stack = [dir];
    while (stack.length > 0) {
      const path = stack.pop() as string;
      const st = await lstat(path);
      if (!st.isDirectory() && st.nlink > 1) continue;
      await lchown(path, uid, uid);
      if (st.isDirectory()) for (const entry of await readdir(path)) stack.push(join(path, entry));
    }
    this.owned.add(key);
  }

  /** Removes everything of an instance that left this node for good: its directories, cgroups and uid. */
  async destroy(instanceId: string): Promise<void> {
    for (const name of this.scope.children().filter((n) => n.startsWith(`${instanceId}.`))) await this.scope.remove(name);
    try {
      for (const name of readdirSync(join(this.root, 'run')).filter((n) => n.startsWith(`${instanceId}.`)))
        rmSync(join(this.root, 'run', name), { recursive: true, force: true });
    } catch {
      /* no run dir */
    }
    rmSync(join(this.root, 'replicas', instanceId), { recursive: true, force: true });
    for (const key of [...this.owned]) if (key.endsWith(`:${this.uids.get(instanceId)}`)) this.owned.delete(key);
    this.uids.release(instanceId);
  }

  /** Instances that hold a uid here (to find those deleted while the agent was down). */
  known(): string[] {
    return this.uids.holders();
  }
}

/** Gives every entry under `dir` (itself included) to `uid`, never following a link. */
async function chownTree(dir: string, uid: number): Promise<void> {
  const stack = [dir];
  while (stack.length > 0) {
    const path = stack.pop() as string;
    const st = await lstat(path);
    await lchown(path, uid, uid);
    if (st.isDirectory()) for (const entry of await readdir(path)) stack.push(join(path, entry));
  }
}

/** bwrap writes `{"child-pid": N, …}` to the info fd once its init runs; N is the init's host pid. */
function readInitPid(child: ChildProcess): Promise<number | undefined> {
  const info = child.stdio[3];
  if (!info || !('on' in info)) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    let text = '';
    info.on('data', (d: Buffer) => {
      text += d.toString();
    });
    info.on('error', () => resolve(undefined));
    info.on('close', () => {
      try {
        const pid = (JSON.parse(text) as { 'child-pid'?: number })['child-pid'];
        resolve(typeof pid === 'number' ? pid : undefined);
      } catch {
        resolve(undefined);
      }
    });
  });
}

async function childrenOf(pid: number): Promise<number[]> {
  try {
    return (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
