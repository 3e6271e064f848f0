import type { Grant } from './grants.js';
import type { RecordSignature } from './records.js';

/**
 * Records kept in the registry. Every part of Allegra reads and writes these shapes; the
 * zod schemas in schemas.ts validate them wherever they cross a process boundary.
 */

/** A quorum agent's lease-backed discovery record (`nodes/<id>`). Expiry of the lease means the node is gone. */
export interface NodeRecord {
  id: string;
  /** Base URL of the agent's signed RPC API, e.g. `http://127.0.0.1:7070`. */
  rpc: string;
  /** Hex Ed25519 public key the agent signs peer requests with. */
  publicKey: string;
  region: string;
  /** Replica slots the operator offers. */
  capacity: number;
  /** Replicas currently running on the node. */
  load: number;
  startedAt: number;
  /** `host:port` of the node ingress (mutual TLS), where gateways on other machines reach its replicas. */
  ingress?: string;
  /** Identifies the machine: gateways on the same machine reach replicas through their local sockets. */
  machine?: string;
  /** The drivers the node runs replicas with; absent: `process` only (nodes from before drivers were a map). */
  drivers?: DriverName[];
  /** `host:port` of the node's SSH server (sessions inside the replicas it runs); its host key is `publicKey`. */
  ssh?: string;
}

/** A gateway's identity (`gateways/<id>`, under its lease): node ingresses admit only these keys. */
export interface GatewayRecord {
  id: string;
  /** Hex Ed25519 key of the gateway's TLS client certificate. */
  publicKey: string;
  machine?: string;
  /** Where the gateway's Prometheus metrics are (its admin port): the UI samples them for its plots. */
  metrics?: string;
  startedAt: number;
}

/** A group of nodes that jointly own the instances hashed to it (`quorums/<id>`). */
export interface QuorumRecord {
  id: string;
  members: string[];
  /** Sum of the members' capacities when the controller last wrote the quorum; weights placement. */
  capacity?: number;
}

export type DriverName = 'process' | 'wasm' | 'vm';
export type DesiredState = 'running' | 'stopped';

/** A content-addressed code bundle (a gzipped tar of the deployed directory or file). */
/** Earlier versions kept for a rollback. */
export const KEEP_PREVIOUS = 3;

export interface PreviousVersion {
  version: number;
  artifact: ArtifactRef;
  cmd: string;
}

export interface ArtifactRef {
  sha256: string;
  size: number;
  /** Node ids that acknowledged holding the blob when the deploy was committed. */
  holders: string[];
}

/** cgroup limits of one replica. Bounds and defaults: `REPLICA_LIMITS` in schemas.ts. */
export interface ReplicaLimits {
  /** Memory (RAM, no swap) in MiB; past it the kernel OOM-kills the replica, which is restarted. */
  memoryMb?: number;
  /** Processes and threads, relay processes included (one per open connection from a gateway). */
  pids?: number;
  /** Relative CPU weight under contention (cgroup v1 cpu.shares scale; 1024 is an equal share). */
  cpuShares?: number;
  /** Virtual CPUs of a VM replica (driver vm). */
  vcpus?: number;
  /** Size of a VM replica's disk (its volume) in MiB (driver vm). */
  diskMb?: number;
}

/** The desired state of an instance (`instances/<name>`), versioned by `version`. */
export interface InstanceSpec {
  id: string;
  name: string;
  /** Hex Ed25519 public key of the owner. */
  owner: string;
  /** Team keys allowed to operate the instance besides the owner. */
  authorized: string[];
  driver: DriverName;
  /** Shell command that starts one replica; `PORT` is set in its environment. */
  cmd: string;
  /** Port the app listens on inside its replica; 0 means "use $PORT". */
  port: number;
  env: Record<string, string>;
  replicas: { min: number; max: number };
  /** Autoscaling settings (`allegra scale`); the autoscaler runs an instance whose replicas.max exceeds its min. */
  autoscale?: AutoscaleSettings;
  /** Resource limits of each replica's sandbox; absent fields take the network defaults (`REPLICA_LIMITS`). */
  limits?: ReplicaLimits;
  /**
   * The instance keeps its files on a volume (`allegra create --volume`): one replica, the writer, mounts it
   * read-write at ALLEGRA_VOLUME_DIR; every quorum member holds a verified copy; another member takes over
   * from the newest complete copy when the writer is lost.
   */
  volume?: boolean;
  artifact: ArtifactRef | null;
  /**
   * The last earlier versions' code (at most `KEEP_PREVIOUS`), newest last: their blobs stay referenced so
   * that `POST …/rollback` can put one back without an upload.
   */
  previous?: PreviousVersion[];
  state: DesiredState;
  /** Counts deploys: 0 until the first code is deployed, then 1, 2… Other changes of the spec leave it alone. */
  version: number;
  domains: string[];
  /** Set by `allegra revoke`: the owner gave up ownership; only `governance` (if any) may change it. */
  immutable: boolean;
  /** When the owner revoked ownership. */
  revokedAt?: number;
  /** After a revocation: a change needs `threshold` distinct signatures of these keys (absent: no change ever). */
  governance?: GovernancePolicy;
  createdAt: number;
  updatedAt: number;
  /** The owner's signed create request: the id derives from it and readers check owner and name against it. */
  createGrant?: Grant;
}

/** How the autoscaler treats an instance (`allegra scale NAME --min N --max M [--target C] [--idle SECONDS]`). */
export interface AutoscaleSettings {
  /** Requests in flight per replica the autoscaler aims for (Knative's concurrency target; it plans at 70 % of it). */
  target: number;
  /** With replicas.min 0: seconds without a request before the last replica stops (and the gateway holds the next). */
  idleSeconds: number;
  /** Stable window in seconds (Knative's 60 by default); the panic window is a tenth of it. */
  windowSeconds?: number;
}

/** The autoscaler's decision for one instance (`scale/<instanceId>`), written by the elected autoscaler only. */
export interface ScaleRecord {
  instanceId: string;
  /** Replicas the instance should run now, within its replicas.min..max. */
  desired: number;
  /** Panic mode: the short window saw at least twice what the running replicas are meant for; no scale-down. */
  panic: boolean;
  /** Average concurrency over the stable and the panic window when decided. */
  stableConcurrency: number;
  panicConcurrency: number;
  /** One line: why this count (for `allegra status`). */
  reason: string;
  updatedAt: number;
}

/** One gateway's load signal for one instance (`load/<instanceId>/<gatewayId>`, under the gateway's lease). */
export interface LoadRecord {
  instanceId: string;
  gateway: string;
  /** Requests in flight (admitted or queued at the route gate), averaged over the last tick. */
  concurrency: number;
  /** Requests the gateway holds for an instance with no replica (the activator's wake-up signal). */
  held: number;
  /** Requests per second over the last tick. */
  rps: number;
  /** Length of that tick in ms. */
  windowMs: number;
  updatedAt: number;
}

/** M of N keys that may still change a revoked instance, all signing the same proposal. */
export interface GovernancePolicy {
  threshold: number;
  keys: string[];
}

/** One running copy of an instance, reported by the agent that runs it (`replicas/<instanceId>/<nodeId>.<slot>`). */
export interface ReplicaRecord {
  instanceId: string;
  nodeId: string;
  slot: number;
  /**
   * Where the gateway sends traffic: `unix:/path/http.sock` for a sandboxed replica, `http://127.0.0.1:41234`
   * for an unsandboxed one; empty while the replica is not running (see `lastError`).
   */
  endpoint: string;
  healthy: boolean;
  /** Spec version the replica runs. */
  version: number;
  pid: number | null;
  restarts: number;
  /** A VM replica's accelerator: KVM, or TCG (software emulation) where the host has no usable KVM. */
  accel?: 'kvm' | 'tcg';
  /** Why the replica is not running or not healthy (refused by the node's sandbox policy, start failure, last exit). */
  lastError?: string;
  updatedAt: number;
  /** Signature of the node that runs the replica (its key is in `nodes/<nodeId>`); gateways ignore unsigned records. */
  signature?: RecordSignature;
}

/** One quorum member's view of an instance (`instance-status/<instanceId>/<nodeId>`, under the node's lease). */
export interface InstanceStatusRecord {
  instanceId: string;
  nodeId: string;
  /** Spec version the member last acted on. */
  version: number;
  /** Artifact hash being prepared or run (null for an instance without code). */
  artifact: string | null;
  phase: 'fetching' | 'unpacking' | 'ready' | 'failed';
  /** Why the artifact could not be prepared, for the developer. */
  reason?: string;
  retryAt?: number;
  /** This member's copy of the instance's state (STATE-API): where it is and whether it matches. */
  state?: {
    /** Registry revision of the last committed state write this copy applied. */
    revision: number;
    checksum: string;
    /** The copy's checksum equals the one committed with that write. */
    matches: boolean;
    repairs: number;
    keys: number;
    bytes: number;
    quotaBytes: number;
    quotaKeys: number;
  };
  /** This member's copy of the instance's volume (`--volume`). */
  volume?: {
    role: 'follower' | 'taking-over' | 'writing' | 'stepping-down' | 'fenced';
    /** The writer's node id, as this member knows it. */
    writer: string | null;
    /** Sequence number of the newest committed snapshot, and when the writer captured it. */
    seq: number;
    capturedAt: number | null;
    /** This member holds that snapshot whole (manifest and every chunk, sha256-verified). */
    complete: boolean;
    problem?: string;
  };
  updatedAt: number;
  /** The member's replicas of the instance and what each reports about its own load (drivers that can tell). */
  replicas?: ReplicaFigureRecord[];
}

/** What an agent reports about one replica's load (wasm replicas: their queue inside the host). */
export interface ReplicaFigureRecord {
  slot: number;
  healthy: boolean;
  inFlight?: number;
  queued?: number;
  requests?: number;
  memoryBytes?: number;
}

/** The cookie gateways set for `allegra create --sticky cookie`. */
export const STICKY_COOKIE = 'allegra-sticky';

/** Per-route overrides of the gateway's limits and balancing. */
export interface RoutePolicy {
  maxBodyBytes?: number;
  timeoutMs?: number;
  tryTimeoutMs?: number;
  retries?: number;
  maxInFlight?: number;
  /** Opt-in session affinity: requests with the same cookie (or header) value go to the same replica. */
  sticky?: {
    cookie?: string;
    header?: string;
    /** The gateway sets the cookie (to a value that maps to the replica it chose) on a client that has none. */
    insert?: boolean;
  };
}

/** Host → instance mapping served by gateways (`routes/<host>`). */
export interface RouteRecord {
  host: string;
  instanceId: string;
  instanceName: string;
  /** How the route came to be: the network name given at create time, or a custom domain. */
  kind: 'network' | 'custom';
  createdAt: number;
  policy?: RoutePolicy;
  /** Set by `allegra expose`: serve this host over HTTPS with a certificate from the network's issuer. */
  tls?: { redirectHttp: boolean };
  /** The port the app listens on inside its replica, as given to `allegra expose`. */
  port?: number;
  /**
   * The owner-signed requests (create, expose) that made this route. Gateways derive host, TLS, port and
   * policy from them and serve nothing that no authorized key asked for.
   */
  grants?: Grant[];
}

/**
 * A certificate shared by every gateway (`certs/<host>`): the public chain and its metadata, which agents and
 * the CLI may read. Its private key is a CertKeyRecord under `cert-keys/<host>`, readable by gateways only.
 */
export interface CertRecord {
  host: string;
  certPem: string;
  notBefore: number;
  notAfter: number;
  /** Renew from this time on: two thirds into the certificate's lifetime. */
  renewAfter: number;
  issuer: 'acme' | 'local';
  issuedAt: number;
}

/** The private key of `certs/<host>` (`cert-keys/<host>`), written in the same transaction as the certificate. */
export interface CertKeyRecord {
  host: string;
  keyPem: string;
  /** SHA-256 (hex) of the certificate's `certPem`: a reader pairs a key only with the certificate it belongs to. */
  certSha256: string;
}

/** Where issuance of a host's certificate stands (`cert-status/<host>`), for `allegra expose` progress. */
export interface CertStatusRecord {
  host: string;
  state: 'ordering' | 'challenge' | 'issued' | 'failed';
  detail: string;
  updatedAt: number;
  /** When the next attempt is due after a failure. */
  retryAt?: number;
}

/** Network-wide settings (`config/network`). */
export interface NetworkConfig {
  baseDomain: string;
  quorumSize: number;
  /** The gateways' public HTTPS port, for the URLs the network hands out (default 443). */
  httpsPort?: number;
  /** The gateways' public HTTP port (default 80). */
  httpPort?: number;
}

/** What `allegra status` shows: the spec with where and how it runs. */
export interface InstanceStatus {
  instance: InstanceSpec;
  quorum: QuorumRecord | null;
  replicas: ReplicaRecord[];
  routes: string[];
  /** What each quorum member reports about the instance's code. */
  members: InstanceStatusRecord[];
  /** The autoscaler's latest decision, for an autoscaled instance. */
  scale?: ScaleRecord | null;
  /** Where the instance answers: one URL per route (https for exposed ones), with the gateways' ports. */
  urls?: string[];
}

/** A spec with the network's defaults, for code that creates instances (agents) or seeds registries (bench, tests). */
export function newInstanceSpec(
  fields: Pick<InstanceSpec, 'id' | 'name' | 'owner'> & Partial<InstanceSpec>,
  now = Date.now(),
): InstanceSpec {
  return {
    authorized: [],
    driver: 'process',
    cmd: '',
    port: 0,
    env: {},
    replicas: { min: 1, max: 1 },
    artifact: null,
    state: 'running',
    version: 1,
    domains: [],
    immutable: false,
    createdAt: now,
    updatedAt: now,
    ...fields,
  };
}
