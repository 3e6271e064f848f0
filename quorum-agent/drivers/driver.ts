/**
 * The instance driver contract. A driver knows how to run one replica of an instance and nothing about
 * the registry, quorums or restarts: supervision is shared by all drivers (see supervisor.ts).
 * `process` runs a command; `wasm` (jco) and `vm` (QEMU) slot in behind the same interface.
 */
import type { DriverName } from '../../protocol/types.js';

export interface ReplicaLaunch {
  instanceId: string;
  instanceName: string;
  slot: number;
  /** Directory holding the unpacked artifact (the working directory of a process replica). */
  workDir: string;
  cmd: string;
  env: Record<string, string>;
  /** Port the replica must listen on (exported as PORT). */
  port: number;
  /** File that receives the replica's stdout and stderr. */
  logFile: string;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ReplicaHandle {
  /** Base URL the gateway forwards to, e.g. `http://127.0.0.1:41234`. */
  readonly endpoint: string;
  readonly pid: number | null;
  /** Resolves once the replica has exited, for any reason. */
  readonly exited: Promise<ExitInfo>;
  /** One health probe: true if the replica answers. */
  health(): Promise<boolean>;
  /** Asks the replica to stop, and forces it after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface Driver {
  readonly name: DriverName;
  start(launch: ReplicaLaunch): Promise<ReplicaHandle>;
}
