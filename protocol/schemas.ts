/**
 * zod schemas for everything that crosses a process boundary: RPC payloads and registry records.
 * The RPC server validates every request body with these; readers of the registry parse records with them
 * so that one bad record is skipped with a log line instead of crashing a gateway.
 */
import { z } from 'zod';
import { KEEP_PREVIOUS } from './types.js';

export const INSTANCE_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const hexKey = z.string().regex(/^[0-9a-f]{64}$/, 'must be a 64-character hex Ed25519 public key');

export const instanceName = z
  .string()
  .regex(INSTANCE_NAME, 'instance names are 1-63 characters of a-z, 0-9 and "-", not starting or ending with "-"');

export const replicasRange = z
  .object({ min: z.number().int().min(0).max(64), max: z.number().int().min(1).max(64) })
  .refine((r) => r.min <= r.max, 'replicas: min must not exceed max');

/** Bounds and defaults of replica cgroup limits: an instance may ask for less or more, never past `max`. */
export const REPLICA_LIMITS = {
  memoryMb: { min: 32, max: 16_384, default: 512 },
  // Relay processes count: one per connection a gateway holds open to the replica (gateways keep up to 256).
  pids: { min: 64, max: 16_384, default: 1024 },
  cpuShares: { min: 2, max: 10_000, default: 1024 },
  // VM replicas (driver vm) only: virtual CPUs and the size of the VM's disk, the instance's volume.
  vcpus: { min: 1, max: 16, default: 1 },
  diskMb: { min: 64, max: 1_048_576, default: 1024 },
} as const;

const limit = (b: { min: number; max: number }) => z.number().int().min(b.min).max(b.max).optional();
export const replicaLimits = z
  .object({
    memoryMb: limit(REPLICA_LIMITS.memoryMb),
    pids: limit(REPLICA_LIMITS.pids),
    cpuShares: limit(REPLICA_LIMITS.cpuShares),
    vcpus: limit(REPLICA_LIMITS.vcpus),
    diskMb: limit(REPLICA_LIMITS.diskMb),
  })
  .strict();

/** The limits a replica runs with: the spec's, else the defaults. */
export function effectiveLimits(
  limits: z.infer<typeof replicaLimits> | undefined,
): Required<Pick<z.infer<typeof replicaLimits>, 'memoryMb' | 'pids' | 'cpuShares'>> {
  return {
    memoryMb: limits?.memoryMb ?? REPLICA_LIMITS.memoryMb.default,
    pids: limits?.pids ?? REPLICA_LIMITS.pids.default,
    cpuShares: limits?.cpuShares ?? REPLICA_LIMITS.cpuShares.default,
  };
}

export const DRIVERS = ['process', 'wasm', 'vm'] as const;
const driverName = z.enum(DRIVERS);

/** Bounds and defaults of autoscaling (`allegra scale`): Knative's concurrency target and window by default. */
export const AUTOSCALE = {
  target: { min: 1, max: 10_000, default: 100 },
  idleSeconds: { min: 1, max: 86_400, default: 30 },
  windowSeconds: { min: 6, max: 3_600, default: 60 },
} as const;

export const autoscaleSettings = z
  .object({
    target: z.number().int().min(AUTOSCALE.target.min).max(AUTOSCALE.target.max),
    idleSeconds: z.number().int().min(AUTOSCALE.idleSeconds.min).max(AUTOSCALE.idleSeconds.max),
    windowSeconds: z.number().int().min(AUTOSCALE.windowSeconds.min).max(AUTOSCALE.windowSeconds.max).optional(),
  })
  .strict();

/** `POST /v1/instances/:name/scale`: the replica bounds and, optionally, the autoscaler's settings. */
export const scaleRequest = z
  .object({
    min: z.number().int().min(0).max(64),
    max: z.number().int().min(1).max(64),
    target: autoscaleSettings.shape.target.optional(),
    idleSeconds: autoscaleSettings.shape.idleSeconds.optional(),
    windowSeconds: z.number().int().min(AUTOSCALE.windowSeconds.min).max(AUTOSCALE.windowSeconds.max).optional(),
  })
  .strict()
  .refine((r) => r.min <= r.max, 'min must not exceed max');

export const routePolicy = z.object({
  maxBodyBytes: z.number().int().min(0).optional(),
  timeoutMs: z.number().int().min(1).optional(),
  tryTimeoutMs: z.number().int().min(1).optional(),
  retries: z.number().int().min(0).max(10).optional(),
  maxInFlight: z.number().int().min(1).optional(),
  sticky: z
    .object({
      cookie: z.string().min(1).max(64).optional(),
      header: z.string().min(1).max(64).optional(),
      insert: z.boolean().optional(),
    })
    .optional(),
});

export const createInstanceRequest = z.object({
  name: instanceName,
  driver: driverName.default('process'),
  cmd: z.string().max(4096).default(''),
  port: z.number().int().min(0).max(65535).default(0),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).default({}),
  replicas: replicasRange.optional(),
  limits: replicaLimits.optional(),
  /** One writer replica on a volume replicated to every quorum member (docs/ARCHITECTURE.md, "Volumes"). */
  volume: z.boolean().optional(),
  /** How gateways route the instance's requests (session affinity, tighter limits); travels in the create grant. */
  policy: routePolicy.optional(),
});
export type CreateInstanceRequest = z.infer<typeof createInstanceRequest>;

/** Deploy metadata travels in headers because the body is the artifact itself. */
export const deployHeaders = z.object({
  cmd: z.string().max(4096).optional(),
});

const signedEnvelope = z.object({
  method: z.string().max(16),
  path: z.string().max(2048),
  headers: z.record(z.string().max(128), z.string().max(4096)),
});
export const grant = z.object({ envelope: signedEnvelope, body: z.string().max(16 * 1024) });
const recordSignature = z.object({ key: hexKey, sig: z.string().max(200) });

export const nodeRecord = z.object({
  id: z.string().min(1),
  rpc: z.string().url(),
  publicKey: hexKey,
  region: z.string(),
  capacity: z.number().int().min(0),
  load: z.number().int().min(0),
  startedAt: z.number(),
  ingress: z
    .string()
    .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s/:[\]]+):\d{1,5}$/)
    .optional(),
  machine: z.string().max(128).optional(),
  drivers: z.array(driverName).max(DRIVERS.length).optional(),
  ssh: z
    .string()
    .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s/:[\]]+):\d{1,5}$/)
    .optional(),
});

export const gatewayRecord = z.object({
  id: z.string().min(1).max(128),
  publicKey: hexKey,
  machine: z.string().max(128).optional(),
  metrics: z.string().url().max(256).optional(),
  startedAt: z.number(),
});

export const quorumRecord = z.object({ id: z.string().min(1), members: z.array(z.string()), capacity: z.number().min(0).optional() });

export const artifactRef = z.object({
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().min(0),
  holders: z.array(z.string()),
});

export const instanceSpec = z.object({
  id: z.string().min(1),
  name: instanceName,
  owner: hexKey,
  authorized: z.array(hexKey),
  driver: driverName,
  cmd: z.string(),
  port: z.number().int(),
  env: z.record(z.string(), z.string()),
  replicas: z.object({ min: z.number().int(), max: z.number().int() }),
  autoscale: autoscaleSettings.optional(),
  limits: replicaLimits.optional(),
  volume: z.boolean().optional(),
  artifact: artifactRef.nullable(),
  previous: z
    .array(z.object({ version: z.number().int(), artifact: artifactRef, cmd: z.string() }))
    .max(KEEP_PREVIOUS)
    .optional(),
  state: z.enum(['running', 'stopped']),
  version: z.number().int(),
  domains: z.array(z.string()),
  immutable: z.boolean(),
  revokedAt: z.number().optional(),
  governance: z.lazy(() => governancePolicy).optional(),
  createdAt: z.number(),
  updatedAt: z.number(),
  createGrant: grant.optional(),
});

/** M of N distinct Ed25519 keys; M from 1 to N, at most 32 keys. */
export const governancePolicy = z
  .object({ threshold: z.number().int().min(1).max(32), keys: z.array(hexKey).min(1).max(32) })
  .refine((g) => new Set(g.keys).size === g.keys.length, 'governance keys must be distinct')
  .refine((g) => g.threshold <= g.keys.length, 'governance threshold cannot exceed the number of keys');

export const rollbackRequest = z.object({ version: z.number().int().min(1) }).strict();
export const revokeRequest = z.object({ governance: governancePolicy.optional() }).strict();
export const authRequest = z
  .object({ add: hexKey.optional(), remove: hexKey.optional() })
  .refine((r) => (r.add === undefined) !== (r.remove === undefined), 'name exactly one key to add or remove');

export const replicaRecord = z.object({
  instanceId: z.string(),
  nodeId: z.string(),
  slot: z.number().int(),
  endpoint: z.string(),
  healthy: z.boolean(),
  version: z.number().int(),
  pid: z.number().int().nullable(),
  restarts: z.number().int(),
  accel: z.enum(['kvm', 'tcg']).optional(),
  lastError: z.string().max(1024).optional(),
  updatedAt: z.number(),
  signature: recordSignature.optional(),
});

export const instanceStatusRecord = z.object({
  instanceId: z.string(),
  nodeId: z.string(),
  version: z.number().int(),
  artifact: z.string().nullable(),
  phase: z.enum(['fetching', 'unpacking', 'ready', 'failed']),
  reason: z.string().optional(),
  retryAt: z.number().optional(),
  state: z
    .object({
      revision: z.number(),
      checksum: z.string(),
      matches: z.boolean(),
      repairs: z.number(),
      keys: z.number(),
      bytes: z.number(),
      quotaBytes: z.number(),
      quotaKeys: z.number(),
    })
    .optional(),
  volume: z
    .object({
      role: z.enum(['follower', 'taking-over', 'writing', 'stepping-down', 'fenced']),
      writer: z.string().nullable(),
      seq: z.number(),
      capturedAt: z.number().nullable(),
      complete: z.boolean(),
      problem: z.string().max(1024).optional(),
    })
    .optional(),
  updatedAt: z.number(),
  replicas: z
    .array(
      z.object({
        slot: z.number().int().min(0),
        healthy: z.boolean(),
        inFlight: z.number().min(0).optional(),
        queued: z.number().min(0).optional(),
        requests: z.number().min(0).optional(),
        memoryBytes: z.number().min(0).optional(),
      }),
    )
    .max(64)
    .optional(),
});

export const scaleRecord = z.object({
  instanceId: z.string().min(1),
  desired: z.number().int().min(0).max(64),
  panic: z.boolean(),
  stableConcurrency: z.number().min(0),
  panicConcurrency: z.number().min(0),
  reason: z.string().max(300),
  updatedAt: z.number(),
});

/** Gateways write these: readers bound every figure so one gateway cannot ask for absurd capacity. */
export const loadRecord = z.object({
  instanceId: z.string().min(1).max(128),
  gateway: z.string().min(1).max(128),
  concurrency: z.number().min(0).max(1_000_000),
  held: z.number().int().min(0).max(1_000_000),
  rps: z.number().min(0).max(10_000_000),
  windowMs: z.number().min(0).max(60_000),
  updatedAt: z.number(),
});

export const routeRecord = z.object({
  host: z.string(),
  instanceId: z.string(),
  instanceName: z.string(),
  kind: z.enum(['network', 'custom']),
  createdAt: z.number(),
  policy: routePolicy.optional(),
  tls: z.object({ redirectHttp: z.boolean() }).optional(),
  port: z.number().int().min(1).max(65535).optional(),
  grants: z.array(grant).max(8).optional(),
});

export const certRecord = z.object({
  host: z.string(),
  certPem: z.string(),
  notBefore: z.number(),
  notAfter: z.number(),
  renewAfter: z.number(),
  issuer: z.enum(['acme', 'local']),
  issuedAt: z.number(),
});

export const certKeyRecord = z.object({
  host: z.string(),
  keyPem: z.string(),
  certSha256: z.string(),
});

export const certStatusRecord = z.object({
  host: z.string(),
  state: z.enum(['ordering', 'challenge', 'issued', 'failed']),
  detail: z.string(),
  updatedAt: z.number(),
  retryAt: z.number().optional(),
});

export const exposeRequest = z.object({
  /** Optional: when given, it must be the port the instance listens on (a check, not a setting). */
  port: z.number().int().min(1).max(65535).optional(),
  domain: z
    .string()
    .toLowerCase()
    .regex(/^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/, 'domain must be a DNS name like app.example.com')
    .optional(),
  redirectHttp: z.boolean().default(true),
});

export const networkConfig = z.object({
  baseDomain: z.string(),
  quorumSize: z.number().int().min(1),
  httpsPort: z.number().int().min(1).max(65535).optional(),
  httpPort: z.number().int().min(1).max(65535).optional(),
});

/** Parses a JSON registry value with a schema; returns undefined (never throws) for a bad record. */
export function parseRecord<T>(schema: z.ZodType<T>, raw: string | undefined): T | undefined {
  if (raw === undefined) return undefined;
  try {
    const result = schema.safeParse(JSON.parse(raw));
    return result.success ? result.data : undefined;
  } catch {
    return undefined;
  }
}
