/**
 * A quorum agent: announces its node under a lease, takes part in controller election, serves the signed
 * RPC API, and reconciles the replicas it should run with what the registry says.
 */
import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type ServerType, serve } from '@hono/node-server';
import type { Logger } from 'pino';
import { RpcClient } from '../protocol/client.js';
import { keys, PREFIX } from '../protocol/keys.js';
import type { Lease, Registry } from '../protocol/registry.js';
import { RequestVerifier } from '../protocol/signing.js';
import type { InstanceSpec, NodeRecord, ReplicaRecord } from '../protocol/types.js';
import { ClusterView } from '../registry/cluster-view.js';
import { assignSlots } from '../router/slots.js';
import { BlobStore } from './blobs.js';
import { Controller } from './controller.js';
import { DnsHttpVerifier } from './domains.js';
import type { Driver } from './drivers/driver.js';
import { openProcessDriver, type ProcessDriver } from './drivers/process.js';
import { loadOrCreateIdentity, type NodeIdentity } from './identity.js';
import { inferCommand } from './infer-command.js';
import { InstanceService } from './instances.js';
import { createRpcApp } from './rpc.js';
import type { SandboxPolicyOptions, SandboxSupport } from './sandbox/support.js';
import type { UidRange } from './sandbox/uids.js';
import { SerialPass } from './serial-pass.js';
import { type DesiredReplica, Supervisor } from './supervisor.js';

export interface AgentOptions {
  registry: Registry;
  dataDir: string;
  host?: string;
  port?: number;
  /** Address peers and the CLI use to reach this agent, if different from the listen address. */
  advertise?: string;
  region?: string;
  capacity?: number;
  log: Logger;
  leaseTtlMs?: number;
  healthIntervalMs?: number;
  maxArtifactBytes?: number;
  /** DNS server (`host:port`) used to check custom-domain proofs; default: the system's resolver. */
  dnsResolver?: string;
  /** Who may run unsandboxed when the host cannot sandbox, and the uids replicas get. */
  sandbox?: SandboxPolicyOptions & { uidRange?: UidRange };
}

export class Agent {
  readonly identity: NodeIdentity;
  readonly view: ClusterView;
  private readonly blobs: BlobStore;
  private readonly supervisor: Supervisor;
  private readonly service: InstanceService;
  private controller: Controller | null = null;
  private server: ServerType | null = null;
  private lease: Lease | null = null;
  private record: NodeRecord | null = null;
  private readonly reconciler: SerialPass;
  private stopping = false;
  /** Artifact versions already unpacked: `${instanceId}/${sha256}` → directory (never shared between instances). */
  private readonly prepared = new Map<string, string>();
  /** Set in start(), once the host's sandboxing support is known. */
  private driver: ProcessDriver | null = null;
  private sandboxSupport: SandboxSupport | null = null;
  /** Instances this node keeps directories or a uid for: destroyed once they leave the cluster view. */
  private readonly hosted = new Set<string>();
  private readonly destroying = new Set<string>();
  private readonly fetching = new Set<string>();

  constructor(private readonly opts: AgentOptions) {
    this.identity = loadOrCreateIdentity(opts.dataDir);
    this.view = new ClusterView(opts.registry);
    this.blobs = new BlobStore(join(opts.dataDir, 'blobs'));
    this.service = new InstanceService(opts.registry, this.view, this.identity.id);
    this.reconciler = new SerialPass(
      () => this.reconcilePass(),
      (err) => this.opts.log.error({ err }, 'reconcile failed'),
    );
    const driver: Driver = {
      name: 'process',
      start: (launch) => this.processDriver().start(launch),
      destroy: (instanceId) => this.processDriver().destroy(instanceId),
    };
    this.supervisor = new Supervisor({
      nodeId: this.identity.id,
      driver,
      log: opts.log,
      healthIntervalMs: opts.healthIntervalMs ?? 1_000,
      report: (key, record) => void this.publishReplica(key, record),
    });
  }

  get nodeId(): string {
    return this.identity.id;
  }

  private processDriver(): ProcessDriver {
    if (!this.driver) throw new Error('agent not started');
    return this.driver;
  }

  /** What the host offers for sandboxing (known after start). */
  get sandbox(): SandboxSupport | null {
    return this.sandboxSupport;
  }

  private async setUpSandbox(): Promise<void> {
    const { driver, support, hosted } = await openProcessDriver({
      dataDir: this.opts.dataDir,
      nodeId: this.identity.id,
      policy: this.opts.sandbox ?? {},
      log: this.opts.log,
    });
    this.driver = driver;
    this.sandboxSupport = support;
    for (const id of hosted) this.hosted.add(id);
  }

  get rpcUrl(): string {
    if (!this.record) throw new Error('agent not started');
    return this.record.rpc;
  }

  async start(): Promise<this> {
    const { log } = this.opts;
    const app = createRpcApp({
      nodeId: this.identity.id,
      service: this.service,
      view: this.view,
      blobs: this.blobs,
      verifier: new RequestVerifier(),
      pushTo: (nodeId, sha256) => this.pushBlob(nodeId, sha256),
      log,
      maxArtifactBytes: this.opts.maxArtifactBytes ?? 256 * 1024 * 1024,
      domains: new DnsHttpVerifier(this.opts.dnsResolver),
    });
    const host = this.opts.host ?? '127.0.0.1';
    const port = await new Promise<number>((resolve, reject) => {
      this.server = serve({ fetch: app.fetch, hostname: host, port: this.opts.port ?? 0 }, (info: AddressInfo) => resolve(info.port));
      this.server.once('error', reject);
    });
    await this.view.start();
    await this.setUpSandbox();
    this.record = {
      id: this.identity.id,
      rpc: this.opts.advertise ?? `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
      publicKey: this.identity.keyPair.publicKeyHex,
      region: this.opts.region ?? 'local',
      capacity: this.opts.capacity ?? 16,
      load: 0,
      startedAt: Date.now(),
    };
    await this.announce();
    this.controller = new Controller(this.opts.registry, this.view, this.identity.id, () => this.lease?.id ?? '', log);
    this.controller.start();
    this.view.onChange(() => this.reconcile());
    this.reconcile();
    log.info({ node: this.identity.id, rpc: this.record.rpc }, 'agent started');
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
          this.controller?.kick();
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

  private async publishReplica(key: { instanceId: string; slot: number }, record: ReplicaRecord | null): Promise<void> {
    const k = keys.replica(key.instanceId, this.identity.id, key.slot);
    try {
      if (record) {
        // A replica record of a deleted instance must not come back: write only while the instance exists.
        if (!this.lease || ![...this.view.instances.values()].some((s) => s.id === key.instanceId)) return;
        await this.opts.registry.put(k, JSON.stringify(record), { lease: this.lease.id });
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

  /** Runs a reconcile pass now, or once more after the pass in progress. */
  private reconcile(): void {
    if (!this.stopping) this.reconciler.request();
  }

  private async reconcilePass(): Promise<void> {
    const desired: DesiredReplica[] = [];
    for (const spec of this.view.instances.values()) {
      if (spec.state !== 'running') continue;
      const quorum = this.view.quorumOf(spec.id);
      if (!quorum?.members.includes(this.identity.id)) continue;
      const mine = assignSlots(spec.id, quorum.members, spec.replicas.min).filter((s) => s.nodeId === this.identity.id);
      if (mine.length === 0) continue;
      const workDir = await this.prepare(spec);
      if (!workDir) continue;
      const cmd = spec.cmd || inferCommand(workDir);
      if (!cmd) {
        this.opts.log.warn({ instance: spec.name }, 'instance has no command and none could be inferred from its files');
        continue;
      }
      this.hosted.add(spec.id);
      for (const { slot } of mine) {
        desired.push({
          instanceId: spec.id,
          instanceName: spec.name,
          slot,
          version: spec.version,
          launch: {
            instanceId: spec.id,
            instanceName: spec.name,
            owner: spec.owner,
            slot,
            workDir,
            cmd,
            env: spec.env,
            listenPort: spec.port,
            limits: spec.limits,
            logFile: join(this.opts.dataDir, 'logs', spec.id, `replica-${slot}.log`),
          },
        });
      }
    }
    const stillRunning = new Set([...this.view.instances.values()].filter((s) => s.state === 'running').map((s) => s.id));
    this.supervisor.reconcile(desired, stillRunning);
    this.destroyDeleted();
    if (this.record && this.record.load !== this.supervisor.count) await this.putNodeRecord().catch(() => {});
  }

  /**
   * Instances deleted from the cluster lose what this node kept for them (replica directories, cgroups,
   * uid), once their replicas have stopped.
   */
  private destroyDeleted(): void {
    const exists = new Set([...this.view.instances.values()].map((s) => s.id));
    for (const id of this.hosted) {
      if (exists.has(id) || this.destroying.has(id)) continue;
      this.destroying.add(id);
      void (async () => {
        try {
          if (!(await this.supervisor.drained(id))) return;
          await this.processDriver().destroy(id);
          this.hosted.delete(id);
          for (const key of [...this.prepared.keys()]) if (key.startsWith(`${id}/`)) this.prepared.delete(key);
          this.opts.log.info({ instanceId: id }, 'deleted instance: replica directories, cgroups and uid released');
        } catch (err) {
          this.opts.log.warn({ err, instanceId: id }, 'could not release a deleted instance’s resources; retrying on the next pass');
        } finally {
          this.destroying.delete(id);
        }
      })();
    }
  }

  /** Returns the directory to run `spec` from, fetching and unpacking its artifact when needed. */
  private async prepare(spec: InstanceSpec): Promise<string | undefined> {
    if (!spec.artifact) {
      const dir = join(this.opts.dataDir, 'apps', spec.id, 'empty');
      mkdirSync(dir, { recursive: true });
      return dir;
    }
    const { sha256 } = spec.artifact;
    const ready = this.prepared.get(`${spec.id}/${sha256}`);
    if (ready) return ready;
    if (!this.blobs.has(sha256)) {
      this.fetchBlob(spec);
      return undefined;
    }
    const dir = join(this.opts.dataDir, 'apps', spec.id, sha256.slice(0, 16));
    await this.blobs.unpack(sha256, dir);
    this.prepared.set(`${spec.id}/${sha256}`, dir);
    return dir;
  }

  /** Pulls a blob from the nodes that acknowledged it, then reconciles again. */
  private fetchBlob(spec: InstanceSpec): void {
    const artifact = spec.artifact;
    if (!artifact || this.fetching.has(artifact.sha256)) return;
    this.fetching.add(artifact.sha256);
    const attempt = async (round: number): Promise<void> => {
      for (const holder of artifact.holders) {
        const node = this.view.node(holder);
        if (!node || holder === this.identity.id) continue;
        try {
          const res = await new RpcClient(node.rpc, this.identity.keyPair).send({
            method: 'GET',
            path: `/v1/blobs/${artifact.sha256}`,
            timeoutMs: 60_000,
          });
          if (res.statusCode !== 200) {
            await res.body.dump();
            continue;
          }
          await this.blobs.write(res.body, { expected: artifact.sha256 });
          this.fetching.delete(artifact.sha256);
          this.reconcile();
          return;
        } catch (err) {
          this.opts.log.warn({ err, holder, sha256: artifact.sha256 }, 'blob fetch failed');
        }
      }
      if (this.stopping) return;
      setTimeout(() => void attempt(round + 1), Math.min(500 * 2 ** round, 10_000)).unref();
    };
    void attempt(0);
  }

  private async pushBlob(nodeId: string, sha256: string): Promise<boolean> {
    const node = this.view.node(nodeId);
    if (!node) return false;
    const res = await new RpcClient(node.rpc, this.identity.keyPair).send({
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
    this.controller?.stop();
    await this.supervisor.stopAll();
    await this.driver?.close().catch((err) => this.opts.log.warn({ err }, 'could not remove the replica cgroup scope'));
    this.view.close();
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
