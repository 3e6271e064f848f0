/**
 * The instance driver contract. A driver knows how to run one replica of an instance and nothing about
 * the registry, quorums or restarts: supervision is shared by all drivers (see supervisor.ts).
 * `process` runs a command; `wasm` (jco) and `vm` (QEMU) slot in behind the same interface.
 */
import type { DriverName, ReplicaLimits } from '../../protocol/types.js';
import type { ExposedSocket } from '../sandbox/bwrap.js';
import type { EnterTarget } from '../sandbox/sandbox.js';
import type { GuestSshTarget } from '../vm/guest-ssh.js';

export interface ReplicaLaunch {
  instanceId: string;
  instanceName: string;
  /** Owner's public key: the node's sandbox policy may run trusted owners' replicas unsandboxed. */
  owner: string;
  slot: number;
  /** Directory holding the unpacked artifact (read-only /app of a sandboxed replica). */
  workDir: string;
  cmd: string;
  env: Record<string, string>;
  /** The port the app listens on inside its replica (spec.port); 0: the driver's default. Exported as PORT. */
  listenPort: number;
  limits?: ReplicaLimits;
  /** Host Unix sockets offered inside the replica on 127.0.0.1:port (the state API, later features). */
  exposed?: ExposedSocket[];
  /** ALLEGRA_STATE_URL of the replica, e.g. `http://127.0.0.1:<exposed port>/v1/`. */
  stateUrl?: string;
  /** For a replica that runs unsandboxed: its state API on a loopback port of the host. */
  hostStateUrl?: () => Promise<string>;
  /** File that receives the replica's stdout and stderr. */
  logFile: string;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ReplicaHandle {
  /** Where the gateway forwards to: `unix:/…/http.sock` (sandboxed) or `http://127.0.0.1:41234`. */
  readonly endpoint: string;
  /** Host pid that stands for the replica: signalling it reaches the replica (SIGKILL kills all of it). */
  readonly pid: number | null;
  /** Resolves once the replica has exited, for any reason, and its resources are released. */
  readonly exited: Promise<ExitInfo>;
  /** One health probe: true if the replica answers. */
  health(): Promise<boolean>;
  /** Asks the replica to stop, and forces it after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** How to run a process inside the replica's sandbox (SSH); absent for a replica that runs unsandboxed. */
  enter?(): Promise<EnterTarget | undefined>;
  /**
   * A replica with an SSH server of its own (a VM's dropbear): SSH sessions are relayed to it with the
   * node's key instead of entering a sandbox.
   */
  guestSsh?(): GuestSshTarget;
}

/** A start the node's policy refuses (not a crash): the reason is shown in the replica's status. */
export class ReplicaRefused extends Error {}

export interface Driver {
  readonly name: DriverName;
  start(launch: ReplicaLaunch): Promise<ReplicaHandle>;
  /** Releases everything kept for an instance that left this node (directories, ids). Its replicas are stopped first. */
  destroy(instanceId: string): Promise<void>;
}
