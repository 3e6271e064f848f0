/**
 * The instance driver contract. A driver knows how to run one replica of an instance and nothing about
 * the registry, quorums or restarts: supervision is shared by all drivers (see supervisor.ts). The agent
 * holds its drivers in a map by name (drivers/set.ts): `process` runs a command in a sandbox, `wasm` a
 * WebAssembly component in the agent's wasm host, and `vm` (QEMU) will slot in behind the same interface.
 * test/helpers/driver-contract.ts is the contract suite every driver passes.
 */
import type { Readable, Writable } from 'node:stream';
import type { DriverName, ReplicaLimits } from '../../protocol/types.js';
import type { ExposedSocket } from '../sandbox/bwrap.js';
import type { EnterTarget } from '../sandbox/sandbox.js';
import type { GuestSshTarget } from '../vm/guest-ssh.js';

export interface ReplicaLaunch {
  instanceId: string;
  instanceName: string;
  /** Owner's public key: the node's sandbox policy may run trusted owners' replicas unsandboxed. */
  owner: string;
  /** The instance's team keys (a VM's seed authorizes them beside the owner's). */
  authorizedKeys?: string[];
  slot: number;
  /** Directory holding the unpacked artifact (read-only /app of a sandboxed replica). */
  workDir: string;
  /** SHA-256 of the deployed artifact, when there is one: drivers that compile code cache by it. */
  artifact?: string;
  /** The command that starts the replica (process driver); other drivers ignore it. */
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
  /** File that receives the replica's stdout and stderr (its log, as `allegra logs` reads it). */
  logFile: string;
  /** Host directory of the instance's volume, when this replica is its writer (ALLEGRA_VOLUME_DIR). */
  volumeDir?: string;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A command to run inside a running replica (`allegra ssh NAME -- CMD`, SSH sessions). */
export interface ExecRequest {
  /** The program and its arguments; the program is looked up on the replica's own PATH. */
  argv: string[];
  /** Added to the replica's environment (the network's ALLEGRA_* variables cannot be overridden). */
  env?: Record<string, string>;
}

/** A command running inside a replica, with the replica's identity, files, network and limits. */
export interface ExecSession {
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly pid: number | null;
  /** Resolves when the command has exited. */
  readonly exited: Promise<ExitInfo>;
  /** Signals the command (and whatever it started); SIGKILL by default. */
  kill(signal?: NodeJS.Signals): void;
}

/** Figures a replica can report about itself (agents publish them beside the gateways' load signals). */
export interface ReplicaFigures {
  /** Requests being handled by the replica right now. */
  inFlight?: number;
  /** Requests waiting inside the replica for their turn. */
  queued?: number;
  /** Requests the replica has received since it started. */
  requests?: number;
  /** Memory the replica uses, in bytes. */
  memoryBytes?: number;
}

export interface ReplicaHandle {
  /** Where the gateway forwards to: `unix:/…/http.sock` (sandboxed, wasm) or `http://127.0.0.1:41234`. */
  readonly endpoint: string;
  /**
   * Host pid that stands for the replica alone: signalling it reaches the replica (SIGKILL kills all of it).
   * null when no process is the replica's own (wasm replicas share their host process).
   */
  readonly pid: number | null;
  /** Resolves once the replica has exited, for any reason, and its resources are released. */
  readonly exited: Promise<ExitInfo>;
  /** How long the replica may take to answer before its status says it does not (a VM boots for a while). */
  readonly startupMs?: number;
  /** The accelerator a VM replica runs with (shown in `allegra status`). */
  readonly accel?: 'kvm' | 'tcg';
  /** One health probe: true if the replica answers. */
  health(): Promise<boolean>;
  /** Asks the replica to stop, and forces it after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** Stops every process of the replica until the returned function resumes them (a volume snapshot). */
  pause?(): Promise<() => void>;
  /** Runs a command inside the replica; rejects with ExecUnsupported where the driver has no such thing. */
  exec(req: ExecRequest): Promise<ExecSession>;
  /** What the replica can tell about its own load, if anything. */
  figures?(): ReplicaFigures | undefined;
  /**
   * How an SSH session joins the replica's sandbox (the SSH server builds its own command line and PTY from
   * it); absent where there is no sandbox to join (unsandboxed process replicas, wasm). `exec` is the
   * driver-neutral way to run one command.
   */
  enter?(): Promise<EnterTarget | undefined>;
  /**
   * A replica with an SSH server of its own (a VM's dropbear): SSH sessions are relayed to it with the
   * node's key instead of entering a sandbox.
   */
  guestSsh?(): GuestSshTarget;
}

/** A start the node's policy refuses (not a crash): the reason is shown in the replica's status. */
export class ReplicaRefused extends Error {}

/** This driver's replicas cannot run commands (a wasm instance has no processes or shell). */
export class ExecUnsupported extends Error {
  override readonly name = 'ExecUnsupported';
}

export interface Driver {
  readonly name: DriverName;
  start(launch: ReplicaLaunch): Promise<ReplicaHandle>;
  /** Releases everything kept for an instance that left this node (directories, ids). Its replicas are stopped first. */
  destroy(instanceId: string): Promise<void>;
  /** After every replica stopped (agent shutdown): releases what the driver holds for the node. */
  close?(): Promise<void>;
  /**
   * Does ahead of time what an instance's first start here would (a volume's standby member: taking over then
   * costs a start, not a first start). Optional: a driver with nothing to ready has no such step.
   */
  prepare?(instanceId: string, owner: string, workDir: string): Promise<void>;
  /** The uid the instance's replicas run as here, where the driver gives each instance its own (volume files are handed to it). */
  uidOf?(instanceId: string): number | undefined;
}
