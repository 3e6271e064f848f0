/**
 * A quorum agent: announces its node under a lease, takes part in controller election, serves the signed
 * RPC API, and reconciles the replicas it should run with what the registry says.
 */
import { rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { type ServerType, serve } from '@hono/node-server';
import type { Logger } from 'pino';
import { RpcClient } from '../protocol/client.js';
import { identityCert } from '../protocol/identity-cert.js';
import { keys, PREFIX } from '../protocol/keys.js';
import { type RecordSignature, signRecord } from '../protocol/records.js';
import type { Lease, Registry } from '../protocol/registry.js';
import { scaleRecord } from '../protocol/schemas.js';
import { RequestVerifier } from '../protocol/signing.js';
import { type Attestation, specHash } from '../protocol/spec-hash.js';
import type {
  ArtifactRef,
  DriverName,
  InstanceSpec,
  InstanceStatusRecord,
  NodeRecord,
  ReplicaRecord,
  ScaleRecord,
} from '../protocol/types.js';
import { ClusterView } from '../registry/cluster-view.js';
import { jsonRecord, Mirror } from '../registry/mirror.js';
import { desiredReplicas, eligibleMembers } from '../router/scale.js';
import { assignSlots } from '../router/slots.js';
import { type ArtifactLimits, DEFAULT_ARTIFACT_LIMITS } from './artifacts.js';
import { Autoscaler } from './autoscaler.js';
import { BlobStore } from './blobs.js';
import { Controller } from './controller.js';
import { DnsHttpVerifier } from './domains.js';
import { openProcessDriver } from './drivers/process.js';
import { DriverSet } from './drivers/set.js';
import { VM_STOP_GRACE_MS, VmDriver, vmVolumeTuning } from './drivers/vm.js';
import { WasmDriver } from './drivers/wasm.js';
import { Governance } from './governance.js';
import { HistoryWriter } from './history.js';
import { loadOrCreateIdentity, type NodeIdentity } from './identity.js';
import { inferCommand } from './infer-command.js';
import { NodeIngress } from './ingress.js';
import { InstanceService } from './instances.js';
import { logRoutes } from './logs-api.js';
import { ArtifactPreparer, type PrepareStatus } from './preparer.js';
import { createRpcApp, type RpcDeps } from './rpc.js';
import { operationRoutes } from './rpc-operations.js';
import type { SandboxPolicyOptions, SandboxSupport } from './sandbox/support.js';
import type { UidRange } from './sandbox/uids.js';
import { SerialPass } from './serial-pass.js';
import { SshServer } from './ssh/server.js';
import { STATE_PORT, StateService } from './state/service.js';
import { type DesiredReplica, Supervisor } from './supervisor.js';
import { type UiService, uiService } from './ui/api.js';
import { UsageMeter } from './usage/meter.js';
import { metered } from './usage/metered-driver.js';
import { type AccelChoice, chooseAccel, hostFacts } from './vm/accel.js';
import type { VolumeLimits } from './volume/layout.js';
import { VolumeService } from './volume/service.js';

/** Largest compressed artifact a deploy may upload (documented in README; the CLI checks it before uploading). */
export const DEFAULT_MAX_ARTIFACT_BYTES = 256 * 1024 * 1024;

/** How long a blob stays after the last instance that referred to it changed or went away. */
const BLOB_GRACE_MS = 60_000;

export interface AgentOptions {
  registry: Registry;
  dataDir: string;
  host?: string;
  port?: number;
  /**
   * Host (name or address) other machines use to reach this agent: its RPC, and its node ingress for
   * gateways. Default: the listen host, which must then not be a wildcard address.
   */
  advertise?: string;
  /** Port of the node ingress (mutual TLS) on the listen host; 0: any free port. Default 0. */
  ingressPort?: number;
  /** Port of the SSH server (sessions inside this node's replicas) on the listen host; 0: any free port. Default 0. */
  sshPort?: number;
  /** Identifies this machine to gateways: one on the same machine reaches replicas by their local sockets. */
  machineId?: string;
  region?: string;
  capacity?: number;
  log: Logger;
  leaseTtlMs?: number;
  healthIntervalMs?: number;
  maxArtifactBytes?: number;
  artifactLimits?: Partial<ArtifactLimits>;
  /** DNS server (`host:port`) used to check custom-domain proofs; default: the system's resolver. */
  dnsResolver?: string;
  /** Who may run unsandboxed when the host cannot sandbox, and the uids replicas get. */
  sandbox?: SandboxPolicyOptions & { uidRange?: UidRange };
  /** Volumes (`--volume`): writer lease TTL, capture interval, size limits. */
  volumes?: { leaseTtlMs?: number; intervalMs?: number; limits?: Partial<VolumeLimits> };
  /** The drivers this node offers (default: process and wasm); node records advertise them. */
  drivers?: DriverName[];
  /** The wasm driver's compile cache; agents on one machine may share one (default `<data>/wasm/cache`). */
  wasmCacheDir?: string;
  /** The wasm host's Node binary (tests on the current LTS) and spare workers. */
  wasmHost?: { execPath?: string; spareWorkers?: number };
  /** The vm driver's accelerator (`auto`: KVM where it really works, else TCG) and image cache. */
  vm?: { accel?: AccelChoice; imagesDir?: string };
}

export const DEFAULT_DRIVERS: readonly DriverName[] = ['process', 'wasm'];

export class Agent {
  readonly identity: NodeIdentity;
  readonly view: ClusterView;
  /** The dashboard (`/ui`) and its API, served beside the RPC API. */
  private ui: UiService | null = null;
  private readonly blobs: BlobStore;
  private readonly supervisor: Supervisor;
  private readonly service: InstanceService;
  private readonly governance: Governance;
  private controller: Controller | null = null;
  private autoscaler: Autoscaler | null = null;
  private server: ServerType | null = null;
  private lease: Lease | null = null;
  private record: NodeRecord | null = null;
  private readonly reconciler: SerialPass;
  private stopping = false;
  private readonly preparer: ArtifactPreparer;
  private readonly artifactLimits: ArtifactLimits;
  /**
   * Instances this node holds anything for (code, logs, replica directories, a uid) and their artifact:
   * once one leaves the cluster view and its replicas have stopped, all of it is removed.
   */
  private readonly known = new Map<string, string | null>();
  private readonly destroying = new Set<string>();
  private gcTimer: NodeJS.Timeout | null = null;
  private ingress: NodeIngress | null = null;
  private readonly state: StateService;
  private readonly volumes: VolumeService;
  private statusTimer: NodeJS.Timeout | null = null;
  /** What this member last reported per instance: its code's phase and its state copy. */
  private readonly reported = new Map<string, { prepare?: PrepareStatus; published?: string }>();
  private ssh: SshServer | null = null;
  private readonly meter: UsageMeter;
  /** Filled in start(), once the host's sandboxing support is known. */
  private readonly drivers = new DriverSet();
  private sandboxSupport: SandboxSupport | null = null;
  /** The elected autoscaler's decisions (`scale/`): how many replicas each autoscaled instance runs. */
  private readonly scale: Mirror<ScaleRecord>;

  constructor(private readonly opts: AgentOptions) {
    this.identity = loadOrCreateIdentity(opts.dataDir);
    this.view = new ClusterView(opts.registry);
    this.blobs = new BlobStore(join(opts.dataDir, 'blobs'));
    this.artifactLimits = { ...DEFAULT_ARTIFACT_LIMITS, ...opts.artifactLimits };
    this.preparer = new ArtifactPreparer({
      dataDir: opts.dataDir,
      blobs: this.blobs,
      limits: this.artifactLimits,
      log: opts.log,
      fetchBlob: (artifact) => this.fetchBlob(artifact),
      onSettled: () => this.reconcile(),
      onStatus: (spec, status) => void this.publishStatus(spec, status),
    });
    this.state = new StateService({
      registry: opts.registry,
      dataDir: opts.dataDir,
      log: opts.log,
      onStatus: () => this.publishStateStatus(),
      onReady: () => this.reconcile(),
    });
    this.volumes = new VolumeService({
      registry: opts.registry,
      view: this.view,
      nodeId: this.identity.id,
      keyPair: this.identity.keyPair,
      dataDir: opts.dataDir,
      log: opts.log,
      ...opts.volumes,
      pause: (instanceId) => this.supervisor.pause(instanceId, 0),
      drained: (instanceId) => this.supervisor.drained(instanceId),
      // A sandboxed process replica's uid owns its volume's files; a VM's disk is the agent's own file.
      ownerUid: (instanceId) => {
        const driver = this.view.instanceById(instanceId)?.driver ?? 'process';
        return this.drivers.get(driver)?.uidOf?.(instanceId);
      },
      changed: () => this.reconcile(),
      tuning: (spec) => (spec.driver === 'vm' ? vmVolumeTuning(spec.limits) : {}),
    });
    this.service = new InstanceService(
      opts.registry,
      this.view,
      this.identity.id,
      new HistoryWriter(opts.registry, this.identity.keyPair, this.identity.id),
    );
    this.governance = new Governance(opts.registry, this.service);
    this.reconciler = new SerialPass(
      () => this.reconcilePass(),
      (err) => this.opts.log.error({ err }, 'reconcile failed'),
    );
    this.scale = new Mirror(opts.registry, PREFIX.scale, jsonRecord(scaleRecord));
    this.meter = new UsageMeter({
      registry: opts.registry,
      keyPair: this.identity.keyPair,
      nodeId: this.identity.id,
      dataDir: opts.dataDir,
      log: opts.log,
    });
    this.supervisor = new Supervisor({
      nodeId: this.identity.id,
      drivers: this.drivers,
      log: opts.log,
      healthIntervalMs: opts.healthIntervalMs ?? 1_000,
      report: (key, record) => void this.publishReplica(key, record),
    });
  }

  get nodeId(): string {
    return this.identity.id;
  }

  /** What the host offers for sandboxing (known after start). */
  get sandbox(): SandboxSupport | null {
    return this.sandboxSupport;
  }

  /** Builds the drivers this node offers: `process` (sandboxed where the host can) and `wasm`. */
  private async setUpDrivers(): Promise<void> {
    const offered = new Set(this.opts.drivers ?? DEFAULT_DRIVERS);
    const { driver, support, hosted } = await openProcessDriver({
      dataDir: this.opts.dataDir,
      nodeId: this.identity.id,
      policy: this.opts.sandbox ?? {},
      log: this.opts.log,
    });
    this.sandboxSupport = support;
    for (const id of hosted) if (!this.known.has(id)) this.known.set(id, null);
    // The process driver always cleans up after instances of earlier runs, even where it is not offered.
    // Every replica is reached through a counting relay: what this node served is what it can sign for.
    if (offered.has('process')) this.drivers.add(metered(driver, this.meter));
    else await driver.close();
    if (offered.has('wasm')) {
      const dir = join(this.opts.dataDir, 'wasm');
      this.drivers.add(
        metered(
          new WasmDriver({
            dataDir: dir,
            cacheDir: this.opts.wasmCacheDir ?? join(dir, 'cache'),
            log: this.opts.log.child({ driver: 'wasm' }),
            hostExecPath: this.opts.wasmHost?.execPath,
            spareWorkers: this.opts.wasmHost?.spareWorkers,
          }),
          this.meter,
        ),
      );
    }
    if (offered.has('vm')) {
      const accel = chooseAccel(hostFacts(), this.opts.vm?.accel ?? 'auto');
      this.opts.log.info({ accel: accel.accel, reason: accel.reason }, 'vm replicas run under QEMU');
      const vm = new VmDriver({
        dir: join(this.opts.dataDir, 'vm'),
        ...(this.opts.vm?.imagesDir ? { imagesDir: this.opts.vm.imagesDir } : {}),
        nodeKey: this.identity.keyPair,
        accel,
        log: this.opts.log.child({ driver: 'vm' }),
      });
      this.drivers.add(metered(vm, this.meter));
      for (const id of vm.hosted()) if (!this.known.has(id)) this.known.set(id, null);
      // Built now, in the background, so the first VM does not wait for it (or says at once why it cannot).
      void vm.ensureImage().catch((err) => this.opts.log.error({ err }, 'cannot build the vm image; vm replicas will not start'));
    }
    this.opts.log.info({ drivers: this.drivers.names() }, 'drivers');
  }

  /** `host:port` of the SSH server (known after start). */
  get sshAddress(): string | undefined {
    return this.record?.ssh;
  }

  get rpcUrl(): string {
    if (!this.record) throw new Error('agent not started');
    return this.record.rpc;
  }

  async start(): Promise<this> {
    const { log } = this.opts;
    const rpcDeps: RpcDeps = {
      nodeId: this.identity.id,
      service: this.service,
      view: this.view,
      blobs: this.blobs,
      verifier: new RequestVerifier({ audience: this.identity.id }),
      pushTo: (nodeId, sha256) => this.pushBlob(nodeId, sha256),
      log,
      maxArtifactBytes: this.opts.maxArtifactBytes ?? DEFAULT_MAX_ARTIFACT_BYTES,
      artifactLimits: this.artifactLimits,
      domains: new DnsHttpVerifier(this.opts.dnsResolver),
      volumeChunks: this.volumes.access,
    };
    const operations = operationRoutes(rpcDeps, {
      governance: this.governance,
      attest: (instanceId, nonce) => this.attest(instanceId, nonce),
    });
    const logs = logRoutes({
      nodeId: this.identity.id,
      keyPair: this.identity.keyPair,
      service: this.service,
      view: this.view,
      dataDir: this.opts.dataDir,
    });
    this.ui = uiService({
      nodeId: this.identity.id,
      registry: this.opts.registry,
      view: this.view,
      service: this.service,
      machine: this.opts.machineId,
    });
    const ui = this.ui;
    rpcDeps.extraRoutes = (app, requests) => {
      operations(app, requests);
      logs(app, requests);
      ui.routes(app, requests);
    };
    const app = createRpcApp(rpcDeps);
    const host = this.opts.host ?? '127.0.0.1';
    const port = await new Promise<number>((resolve, reject) => {
      this.server = serve({ fetch: app.fetch, hostname: host, port: this.opts.port ?? 0 }, (info: AddressInfo) => resolve(info.port));
      this.server.once('error', reject);
    });
    await this.view.start();
    await this.scale.start();
    await this.setUpDrivers();
    await this.volumes.start();
    const advertised = this.opts.advertise ?? host;
    if (/^(0\.0\.0\.0|::|\[::\])$/.test(advertised))
      throw new Error(`listening on ${host} needs --advertise HOST: the address other machines reach this node at`);
    const bracketed = advertised.includes(':') && !advertised.startsWith('[') ? `[${advertised}]` : advertised;
    // Gateways on other machines reach replicas only through here, authenticated both ways by registry keys.
    this.ingress = new NodeIngress({
      host,
      port: this.opts.ingressPort ?? 0,
      cert: await identityCert(this.identity.keyPair, this.identity.id),
      isGateway: (key) => this.view.isGatewayKey(key),
      replicaEndpoint: (instanceId, slot) => this.supervisor.endpointOf(instanceId, slot),
      log,
    });
    const ingressPort = await this.ingress.start();
    this.ssh = new SshServer({
      hostKey: this.identity.keyPair,
      nodeId: this.identity.id,
      log,
      lookup: (name) =>
        this.service.read(name).then(
          (r) => r.spec,
          () => undefined,
        ),
      cached: (name) => this.view.instance(name),
      replica: (instanceId, slot) =>
        slot === undefined
          ? this.supervisor.replicasOf(instanceId).flatMap((r) => this.supervisor.replicaOf(instanceId, r.desired.slot) ?? [])[0]
          : this.supervisor.replicaOf(instanceId, slot),
      whereIs: (instanceId, slot) => {
        const quorum = this.view.quorumOf(instanceId);
        const spec = this.view.instanceById(instanceId);
        if (!quorum || !spec) return undefined;
        // A volume's one replica runs where its writer is, not where slot placement would put it.
        if (spec.volume) return this.volumes.status(instanceId)?.writer ?? undefined;
        const eligible = eligibleMembers(quorum.members, spec.driver, (id) => this.view.node(id));
        return assignSlots(instanceId, eligible, desiredReplicas(spec, this.scale.get(keys.scale(spec.id)))).find((s) => s.slot === slot)
          ?.nodeId;
      },
      record: async (instanceId, entry) => (await this.service.history.appendAlone(instanceId, entry).catch(() => null)) !== null,
    });
    const sshPort = await this.ssh.start(host, this.opts.sshPort ?? 0);
    this.record = {
      id: this.identity.id,
      rpc: `http://${bracketed}:${port}`,
      publicKey: this.identity.keyPair.publicKeyHex,
      region: this.opts.region ?? 'local',
      capacity: this.opts.capacity ?? 16,
      load: 0,
      startedAt: Date.now(),
      ingress: `${bracketed}:${ingressPort}`,
      ssh: `${bracketed}:${sshPort}`,
      ...(this.opts.machineId ? { machine: this.opts.machineId } : {}),
      drivers: this.drivers.names(),
    };
    await this.announce();
    this.controller = new Controller(this.opts.registry, this.view, this.identity.id, () => this.lease?.id ?? '', log);
    this.controller.start();
    this.autoscaler = new Autoscaler({
      registry: this.opts.registry,
      view: this.view,
      nodeId: this.identity.id,
      leaseId: () => this.lease?.id ?? '',
      log,
    });
    this.autoscaler.start();
    this.figuresTimer = setInterval(() => this.publishFigures(), 1_000);
    this.figuresTimer.unref();
    this.view.onChange(() => {
      this.reconcile();
      this.ssh?.recheck();
    });
    this.scale.onChange(() => this.reconcile());
    this.reconcile();
    this.meter.start();
    this.gcTimer = setInterval(() => void this.collectGarbageWithProposals(), 30_000);
    this.gcTimer.unref();
    this.statusTimer = setInterval(() => this.publishStateStatus(), 1_000);
    this.statusTimer.unref();
    log.info({ node: this.identity.id, rpc: this.record.rpc, ingress: this.record.ingress }, 'agent started');
    return this;
  }

  /** Writes the node record under a fresh lease; re-announces if the lease is ever lost. */
  private async announce(): Promise<void> {
    const ttl = this.opts.leaseTtlMs ?? 3_000;
    const lease = await this.opts.registry.grantLease(ttl);
    this.lease = lease;
    await this.putNodeRecord();
    lease.onLost(() => {
      if (this.stopping) return;
      this.opts.log.warn('node lease lost; announcing again');
      const retry = async () => {
        try {
          await this.announce();
          this.supervisor.republishAll();
          // Records under the lost lease are gone: this member's instance reports must be written again.
          for (const entry of this.reported.values()) entry.published = undefined;
          this.publishStateStatus();
          this.controller?.kick();
          this.autoscaler?.kick();
        } catch {
          setTimeout(() => void retry(), 500).unref();
        }
      };
      void retry();
    });
  }

  private async putNodeRecord(): Promise<void> {
    if (!this.record || !this.lease) return;
    this.record.load = this.supervisor.count;
    await this.opts.registry.put(keys.node(this.identity.id), JSON.stringify(this.record), { lease: this.lease.id });
  }

  /** The write in progress per replica key: writes of one key are applied in order, never overtaking each other. */
  private readonly replicaWrites = new Map<string, Promise<void>>();

  /**
   * Publishes (or deletes) one replica's record. Writes of the same key are chained: a delete issued after a
   * put must not land first and leave a record of a stopped replica behind (the autoscaler stops replicas
   * seconds after starting them, so the two often follow each other closely).
   */
  private publishReplica(key: { instanceId: string; slot: number }, record: ReplicaRecord | null): Promise<void> {
    const k = keys.replica(key.instanceId, this.identity.id, key.slot);
    const previous = this.replicaWrites.get(k) ?? Promise.resolve();
    const next = previous.then(() => this.writeReplica(k, key, record));
    this.replicaWrites.set(k, next);
    void next.finally(() => {
      if (this.replicaWrites.get(k) === next) this.replicaWrites.delete(k);
    });
    return next;
  }

  private async writeReplica(k: string, key: { instanceId: string; slot: number }, record: ReplicaRecord | null): Promise<void> {
    try {
      if (record) {
        // A replica record of a deleted instance must not come back: write only while the instance exists.
        if (!this.lease || ![...this.view.instances.values()].some((s) => s.id === key.instanceId)) return;
        // Signed by this node: gateways route only to replicas a member of the quorum vouches for.
        await this.opts.registry.put(k, JSON.stringify(signRecord(this.identity.keyPair, record)), { lease: this.lease.id });
      } else {
        await this.opts.registry.delete(k);
      }
    } catch (err) {
      // The registry may be electing a leader or restarting: publish everything again shortly, so no
      // replica state is lost because one write failed.
      this.opts.log.warn({ err, key: k }, 'could not publish replica state; retrying');
      this.schedulePublishRetry();
    }
  }

  private publishRetry: NodeJS.Timeout | null = null;
  private schedulePublishRetry(): void {
    if (this.publishRetry || this.stopping) return;
    this.publishRetry = setTimeout(() => {
      this.publishRetry = null;
      this.supervisor.republishAll();
      void Promise.all([this.putNodeRecord(), this.removeStaleReplicaRecords()]).catch(() => this.schedulePublishRetry());
    }, 1_000);
    this.publishRetry.unref();
  }

  /** Deletes this node's replica records that no running replica stands behind (a failed delete earlier). */
  private async removeStaleReplicaRecords(): Promise<void> {
    const { items } = await this.opts.registry.list(PREFIX.replicas);
    const mine = `/${this.identity.id}.`;
    for (const kv of items) {
      const at = kv.key.lastIndexOf(mine);
      if (at < 0) continue;
      const instanceId = kv.key.slice(PREFIX.replicas.length, at);
      const slot = Number(kv.key.slice(at + mine.length));
      if (!this.supervisor.runs(instanceId, slot)) await this.opts.registry.delete(kv.key);
    }
  }

  /** This node's signed account of the replicas of an instance it runs, for a verifier's nonce. */
  private attest(instanceId: string, nonce: string): Attestation & { signature: RecordSignature } {
    const replicas = this.supervisor.replicasOf(instanceId).map((r) => ({
      slot: r.desired.slot,
      version: r.desired.version,
      healthy: r.running && r.healthy,
      artifact: r.desired.attest?.artifact ?? null,
      specHash: r.desired.attest?.specHash ?? '',
    }));
    return signRecord(this.identity.keyPair, { nodeId: this.identity.id, instanceId, nonce, at: Date.now(), replicas });
  }

  /** Runs a reconcile pass now, or once more after the pass in progress. */
  private reconcile(): void {
    if (!this.stopping) this.reconciler.request();
  }

  private async reconcilePass(): Promise<void> {
    const desired: DesiredReplica[] = [];
    const present = new Set<string>();
    const counts = new Map<string, number>();
    /** Instances this node is a quorum member of (it keeps a copy of their state). */
    const memberOf = new Set<string>();
    const volumes: Array<{ spec: InstanceSpec; member: boolean; eligible: boolean }> = [];
    for (const spec of this.view.instances.values()) {
      present.add(spec.id);
      this.known.set(spec.id, spec.artifact?.sha256 ?? null);
      const quorum = this.view.quorumOf(spec.id);
      // Every member keeps a copy; only one that offers the driver (a vm instance needs QEMU) may write.
      if (spec.volume)
        volumes.push({
          spec,
          member: quorum?.members.includes(this.identity.id) ?? false,
          eligible: this.drivers.get(spec.driver) !== undefined,
        });
      if (!quorum?.members.includes(this.identity.id)) continue;
      // Every member keeps a verified copy of the instance's state, running or not, replica here or not.
      memberOf.add(spec.id);
      const stateServed = this.state.ready(spec.id);
      if (spec.state !== 'running') continue;
      // A volume's one replica runs where its writer is, once that member has restored the newest copy: exactly
      // one slot, never scaled (the autoscaler leaves volume instances alone; allegra scale refuses them).
      const volumeDir = spec.volume ? this.volumes.ready(spec.id) : null;
      if (spec.volume && !volumeDir) this.readyStandby(spec);
      let mine: Array<{ slot: number }>;
      if (spec.volume) mine = volumeDir ? [{ slot: 0 }] : [];
      else {
        // Slots go to the members that offer the instance's driver; the autoscaler decides how many there are.
        const eligible = eligibleMembers(quorum.members, spec.driver, (id) => this.view.node(id));
        const count = desiredReplicas(spec, this.scale.get(keys.scale(spec.id)));
        counts.set(spec.id, count);
        mine = assignSlots(spec.id, eligible, count).filter((s) => s.nodeId === this.identity.id);
      }
      if (mine.length === 0) continue;
      // Never waits: an artifact still being fetched or unpacked (or refused) holds up only its own instance.
      const workDir = this.preparer.ready(spec);
      // Replicas start once their state API answers (it is started above, and a pass follows when it is up).
      if (!workDir || !stateServed) continue;
      // Only processes have a command; a wasm app's entry is found in its files when it is compiled.
      // Commands run in processes and in VMs; a wasm module has none.
      const runsCommand = spec.driver === 'process' || spec.driver === 'vm';
      const cmd = runsCommand ? spec.cmd || inferCommand(workDir) : spec.cmd;
      if (runsCommand && !cmd) {
        this.opts.log.warn({ instance: spec.name }, 'instance has no command and none could be inferred from its files');
        continue;
      }
      for (const { slot } of mine) {
        desired.push({
          instanceId: spec.id,
          instanceName: spec.name,
          slot,
          version: spec.version,
          ...(volumeDir ? { exclusive: true, stopGraceMs: spec.driver === 'vm' ? VM_STOP_GRACE_MS : 1_000 } : {}),
          driver: spec.driver,
          attest: { artifact: spec.artifact?.sha256 ?? null, specHash: specHash(spec) },
          launch: {
            ...(volumeDir ? { volumeDir } : {}),
            instanceId: spec.id,
            instanceName: spec.name,
            owner: spec.owner,
            authorizedKeys: spec.authorized,
            slot,
            workDir,
            ...(spec.artifact ? { artifact: spec.artifact.sha256 } : {}),
            cmd: cmd ?? '',
            env: spec.env,
            listenPort: spec.port,
            limits: spec.limits,
            logFile: join(this.opts.dataDir, 'logs', spec.id, `replica-${slot}.log`),
            exposed: [{ hostPath: this.state.socketPath(spec.id), port: STATE_PORT }],
            stateUrl: `http://127.0.0.1:${STATE_PORT}/v1/`,
            hostStateUrl: () => this.state.loopbackUrl(spec.id),
          },
        });
      }
    }
    // A volume's writer moved or was fenced: its old replica stops at once, never beside the new one.
    const stillRunning = new Set([...this.view.instances.values()].filter((s) => s.state === 'running' && !s.volume).map((s) => s.id));
    this.supervisor.reconcile(desired, stillRunning, counts);
    this.volumes.reconcile(volumes);
    this.destroyDeleted(present);
    for (const id of this.state.held()) if (!memberOf.has(id)) void this.state.forget(id);
    if (this.record && this.record.load !== this.supervisor.count) await this.putNodeRecord().catch(() => {});
  }

  /** Code already handed to the instance's uid on this standby member, by instance: its work dir. */
  private readonly standbys = new Map<string, string>();

  /** A volume's standby member readies the replica's sandbox ahead, so taking over costs no first-start work. */
  private readyStandby(spec: InstanceSpec): void {
    const workDir = this.preparer.ready(spec);
    const driver = this.drivers.get(spec.driver);
    if (!workDir || this.standbys.get(spec.id) === workDir || !driver?.prepare) return;
    this.standbys.set(spec.id, workDir);
    void driver.prepare(spec.id, spec.owner, workDir).catch((err) => {
      this.standbys.delete(spec.id);
      this.opts.log.warn({ err, instance: spec.name }, 'could not ready the standby sandbox');
    });
  }

  /**
   * An instance deleted from the cluster loses everything this node kept for it, once its replicas have
   * stopped: replica directories, cgroups and uid (the driver), code, logs and status; its blob goes at
   * once if nothing else runs it (other unreferenced blobs wait out the grace period).
   */
  private destroyDeleted(present: ReadonlySet<string>): void {
    for (const [id, sha256] of this.known) {
      if (present.has(id) || this.destroying.has(id)) continue;
      this.destroying.add(id);
      void (async () => {
        try {
          if (!(await this.supervisor.drained(id))) return;
          await this.drivers.destroy(id);
          this.known.delete(id);
          this.standbys.delete(id);
          this.preparer.forget(id);
          rmSync(join(this.opts.dataDir, 'logs', id), { recursive: true, force: true });
          // The state API's socket directory (kept while the instance exists: running sandboxes bind it).
          await this.state.forget(id);
          rmSync(dirname(this.state.socketPath(id)), { recursive: true, force: true });
          await this.opts.registry.delete(keys.instanceStatus(id, this.identity.id)).catch(() => {});
          this.collectGarbage(sha256 ? new Set([sha256]) : undefined);
          this.opts.log.info({ instanceId: id }, 'deleted instance: code, logs, replica directories, cgroups and uid released');
        } catch (err) {
          this.opts.log.warn({ err, instanceId: id }, 'could not release a deleted instance’s resources; retrying on the next pass');
        } finally {
          this.destroying.delete(id);
        }
      })();
    }
  }

  /**
   * Removes blobs no instance refers to any more (after a delete or a new deploy), once they have been
   * unreferenced for a while: an upload in progress writes its blob before the spec that refers to it.
   */
  private readonly unreferencedSince = new Map<string, number>();
  /** Blobs of pending governance deploy proposals, as of the last periodic collection. */
  private proposed = new Set<string>();
  private async collectGarbageWithProposals(): Promise<void> {
    try {
      this.proposed = await this.governance.pendingArtifacts();
    } catch {
      return; // registry unreachable: collect next time, knowing what is proposed
    }
    this.collectGarbage();
  }
  private collectGarbage(released?: Set<string>): void {
    const now = Date.now();
    const referenced = new Set<string>(this.proposed);
    for (const spec of this.view.instances.values()) if (spec.artifact) referenced.add(spec.artifact.sha256);
    for (const sha256 of this.blobs.list()) {
      if (referenced.has(sha256)) {
        this.unreferencedSince.delete(sha256);
        continue;
      }
      const since = this.unreferencedSince.get(sha256) ?? now;
      this.unreferencedSince.set(sha256, since);
      if (released?.has(sha256) || now - since >= BLOB_GRACE_MS) {
        this.blobs.remove(sha256);
        this.unreferencedSince.delete(sha256);
      }
    }
  }

  private figuresTimer: NodeJS.Timeout | null = null;

  /**
   * Replica-level load figures beside the gateways' signals: what replicas report about themselves (a wasm
   * replica's queue in its host), in this member's instance status (publishMember writes only changes).
   */
  private publishFigures(): void {
    if (this.stopping) return;
    for (const [instanceId, list] of this.supervisor.figures())
      if (list.some((f) => f.inFlight !== undefined)) void this.publishMember(instanceId);
  }

  private async publishStatus(spec: InstanceSpec, status: PrepareStatus): Promise<void> {
    const entry = this.reported.get(spec.id) ?? {};
    entry.prepare = status;
    this.reported.set(spec.id, entry);
    await this.publishMember(spec.id);
  }

  /** Re-publishes members' records whose state copy changed (revision, verdict), at most once a second each. */
  private publishStateStatus(): void {
    for (const id of this.state.held()) void this.publishMember(id);
  }

  private async publishMember(instanceId: string): Promise<void> {
    if (!this.lease || this.stopping) return;
    const spec = this.view.instanceById(instanceId);
    if (!spec) return;
    const entry = this.reported.get(instanceId) ?? {};
    this.reported.set(instanceId, entry);
    const prepare = entry.prepare ?? this.preparer.status(instanceId);
    const state = await this.state.status(instanceId);
    const volume = this.volumes.status(instanceId);
    const replicas = this.supervisor.figures().get(instanceId);
    const record: InstanceStatusRecord = {
      instanceId,
      nodeId: this.identity.id,
      version: spec.version,
      artifact: prepare?.sha256 ?? spec.artifact?.sha256 ?? null,
      phase: prepare?.phase ?? (spec.artifact ? 'fetching' : 'ready'),
      ...(prepare?.reason ? { reason: prepare.reason } : {}),
      ...(prepare?.retryAt ? { retryAt: prepare.retryAt } : {}),
      ...(state ? { state: { ...state, quotaBytes: this.state.quota.maxBytes, quotaKeys: this.state.quota.maxKeys } } : {}),
      ...(volume ? { volume: { ...volume, ...(volume.problem ? { problem: volume.problem.slice(0, 1024) } : {}) } } : {}),
      updatedAt: Date.now(),
      ...(replicas ? { replicas: replicas.slice(0, 64) } : {}),
    };
    const { updatedAt: _t, ...fingerprint } = record;
    const text = JSON.stringify(fingerprint);
    if (entry.published === text) return;
    entry.published = text;
    try {
      await this.opts.registry.put(keys.instanceStatus(instanceId, this.identity.id), JSON.stringify(record), { lease: this.lease.id });
    } catch (err) {
      entry.published = undefined;
      this.opts.log.warn({ err, instance: spec.name }, 'could not publish instance status');
    }
  }

  /** Pulls a blob from the nodes that acknowledged it; rejects when none of them could provide it. */
  private async fetchBlob(artifact: ArtifactRef): Promise<void> {
    const failures: string[] = [];
    for (const holder of artifact.holders) {
      const node = this.view.node(holder);
      if (!node || holder === this.identity.id) continue;
      try {
        const res = await new RpcClient(node.rpc, this.identity.keyPair, holder).send({
          method: 'GET',
          path: `/v1/blobs/${artifact.sha256}`,
          timeoutMs: 60_000,
        });
        if (res.statusCode !== 200) {
          await res.body.dump();
          failures.push(`${holder}: HTTP ${res.statusCode}`);
          continue;
        }
        // Verified on the way: a peer that sends other bytes than the hash names gets nothing stored.
        await this.blobs.write(res.body, { expected: artifact.sha256, maxBytes: this.opts.maxArtifactBytes ?? DEFAULT_MAX_ARTIFACT_BYTES });
        return;
      } catch (err) {
        failures.push(`${holder}: ${(err as Error).message}`);
      }
    }
    throw new Error(`no holder could provide blob ${artifact.sha256.slice(0, 12)}… (${failures.join('; ') || 'no live holder'})`);
  }

  private async pushBlob(nodeId: string, sha256: string): Promise<boolean> {
    const node = this.view.node(nodeId);
    if (!node) return false;
    const res = await new RpcClient(node.rpc, this.identity.keyPair, nodeId).send({
      method: 'PUT',
      path: `/v1/blobs/${sha256}`,
      body: { stream: this.blobs.read(sha256), sha256, size: this.blobs.size(sha256) },
      timeoutMs: 60_000,
    });
    await res.body.dump();
    return res.statusCode === 200;
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.reconciler.stop();
    this.preparer.stop();
    if (this.gcTimer) clearInterval(this.gcTimer);
    if (this.figuresTimer) clearInterval(this.figuresTimer);
    this.controller?.stop();
    this.autoscaler?.stop();
    await this.ssh?.stop();
    await this.supervisor.stopAll();
    // Writers commit what their replica wrote last and release the writer record: a clean stop loses nothing.
    await this.volumes.close().catch((err) => this.opts.log.warn({ err }, 'could not hand over the volumes'));
    await this.state.close();
    if (this.statusTimer) clearInterval(this.statusTimer);
    await this.meter.stop().catch((err) => this.opts.log.warn({ err }, 'could not write the last usage records'));
    await this.ingress?.stop();
    await this.drivers
      .close()
      .catch((err) => this.opts.log.warn({ err }, 'could not release the drivers (replica cgroup scope, wasm host)'));
    this.ui?.close();
    this.view.close();
    this.scale.close();
    try {
      await this.lease?.revoke();
    } catch {
      /* registry gone: the lease expires by itself */
    }
    await new Promise<void>((resolve) => {
      if (!this.server) return resolve();
      this.server.close(() => resolve());
      (this.server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
    });
  }
}
