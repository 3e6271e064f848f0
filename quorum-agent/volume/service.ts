/**
 * The volumes of every `--volume` instance this node is a quorum member of (volume.ts holds one), fed by a
 * watch of `volumes/`. Owns what they share: the chunk store and its collection, the writer lease (one per
 * node, granted on first use: losing it fences every volume this node writes), and the book of node keys
 * that heads are verified against (persisted, so a head signed by a writer whose machine is gone still
 * verifies after this agent restarts).
 *
 * On disk, under `<data>/volumes/`: `chunks/` (content-addressed), `live/<instanceId>/` (the writer's
 * working copy, mounted at /volume in its replica), `node-keys.json`.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { keys, PREFIX } from '../../protocol/keys.js';
import type { Lease, Registry } from '../../protocol/registry.js';
import { parseRecord } from '../../protocol/schemas.js';
import type { KeyPair } from '../../protocol/signing.js';
import type { InstanceSpec } from '../../protocol/types.js';
import type { ClusterView } from '../../registry/cluster-view.js';
import { Mirror } from '../../registry/mirror.js';
import type { VolumeChunkAccess } from '../rpc.js';
import { ChunkStore } from './chunks.js';
import type { Thaw } from './freeze.js';
import { DEFAULT_VOLUME_LIMITS, type VolumeHead, type VolumeLimits, volumeHead } from './layout.js';
import { ChunkTransfer } from './transfer.js';
import { Volume, type VolumeStatus, type VolumeTuning } from './volume.js';

export interface VolumeServiceOptions {
  registry: Registry;
  view: ClusterView;
  nodeId: string;
  keyPair: KeyPair;
  dataDir: string;
  log: Logger;
  /** TTL of the writer lease; a lost writer is replaced within about this long. Default 3 s. */
  leaseTtlMs?: number;
  /** How often the writer captures a changed volume (the RPO is about this plus one commit). Default 200 ms. */
  intervalMs?: number;
  limits?: Partial<VolumeLimits>;
  pause: (instanceId: string) => Promise<Thaw | null>;
  drained: (instanceId: string) => Promise<boolean>;
  ownerUid: (instanceId: string) => number | undefined;
  changed: () => void;
  /** Per instance: what differs from the defaults (a VM's disk: larger limits, a longer interval). */
  tuning?: (spec: InstanceSpec) => Partial<VolumeTuning>;
}

type VolumeRecord = { kind: 'writer'; value: string } | { kind: 'head'; head: VolumeHead };

const GC_EVERY_MS = 30_000;
const GC_GRACE_MS = 60_000;

export class VolumeService {
  readonly chunks: ChunkStore;
  private readonly transfer: ChunkTransfer;
  private readonly mirror: Mirror<VolumeRecord>;
  private readonly volumes = new Map<string, Volume>();
  private readonly forgetting = new Set<string>();
  private lease: Promise<Lease> | null = null;
  private readonly nodeKeys = new Map<string, string>();
  private readonly keysFile: string;
  private gcTimer: NodeJS.Timeout | null = null;
  private readonly leaseTtlMs: number;
  private readonly limits: VolumeLimits;

  constructor(private readonly opts: VolumeServiceOptions) {
    const root = join(opts.dataDir, 'volumes');
    mkdirSync(join(root, 'live'), { recursive: true, mode: 0o700 });
    this.chunks = new ChunkStore(join(root, 'chunks'));
    this.transfer = new ChunkTransfer(opts.view, opts.keyPair, opts.nodeId, this.chunks);
    this.keysFile = join(root, 'node-keys.json');
    this.leaseTtlMs = opts.leaseTtlMs ?? 3_000;
    this.limits = { ...DEFAULT_VOLUME_LIMITS, ...opts.limits };
    try {
      for (const [id, key] of Object.entries(JSON.parse(readFileSync(this.keysFile, 'utf8')) as Record<string, string>))
        this.nodeKeys.set(id, key);
    } catch {
      /* first start */
    }
    this.mirror = new Mirror(opts.registry, PREFIX.volumes, (raw, key) => {
      if (key.endsWith('/writer')) return { kind: 'writer', value: raw };
      if (key.endsWith('/head')) {
        const head = parseRecord(volumeHead, raw);
        return head ? { kind: 'head', head } : undefined;
      }
      return undefined;
    });
  }

  async start(): Promise<this> {
    this.mirror.onChange(() => this.feed());
    await this.mirror.start();
    this.gcTimer = setInterval(() => this.collect(), GC_EVERY_MS);
    this.gcTimer.unref();
    return this;
  }

  private liveDir(instanceId: string): string {
    return join(this.opts.dataDir, 'volumes', 'live', instanceId);
  }

  /** The live directory for the writer's replica, if this node is the volume's writer and has taken over. */
  ready(instanceId: string): string | null {
    return this.volumes.get(instanceId)?.ready() ?? null;
  }

  /** What the chunk routes check (rpc.ts): quorum membership, and which chunks belong to which volume. */
  get access(): VolumeChunkAccess {
    return {
      store: this.chunks,
      members: (instanceId) => this.opts.view.quorumOf(instanceId)?.members ?? [],
      holds: (instanceId, sha256) => this.volumes.get(instanceId)?.wanted().has(sha256) ?? false,
    };
  }

  status(instanceId: string): VolumeStatus | undefined {
    return this.volumes.get(instanceId)?.status();
  }

  /**
   * Called by every reconcile pass with the volume instances of the cluster, whether this node is a member
   * of each one's quorum and whether it could run the replica (it offers the driver; a member that cannot
   * still keeps a copy): starts following new ones, steps down from those it no longer holds, forgets
   * deleted ones.
   */
  reconcile(specs: Array<{ spec: InstanceSpec; member: boolean; eligible?: boolean }>): void {
    this.rememberKeys();
    const present = new Set<string>();
    for (const { spec, member, eligible } of specs) {
      present.add(spec.id);
      let v = this.volumes.get(spec.id);
      const tuning = this.opts.tuning?.(spec) ?? {};
      if (!v && member && !this.forgetting.has(spec.id)) {
        v = new Volume(this.context(), spec.id, this.liveDir(spec.id), tuning);
        this.volumes.set(spec.id, v);
      } else v?.retune(tuning);
      if (v) this.feedOne(v, { running: spec.state === 'running', member, eligible: eligible ?? true });
    }
    this.sweep(present);
    for (const [id, v] of this.volumes) {
      if (present.has(id)) {
        // Not a member any more and not (or no longer) writing: nothing to keep here.
        if (v.role === 'follower' && !specs.find((s) => s.spec.id === id)?.member) void this.forget(id, v);
        continue;
      }
      void this.forget(id, v);
    }
  }

  /**
   * Live directories (and staged copies) of volumes this node no longer follows, left by an instance deleted
   * while the agent was down: removed. A volume followed here is never touched (it holds its own).
   */
  private sweep(present: ReadonlySet<string>): void {
    const root = join(this.opts.dataDir, 'volumes', 'live');
    let names: string[];
    try {
      names = readdirSync(root);
    } catch {
      return;
    }
    for (const name of names) {
      const id = name.replace(/\.(stage|restore)$/, '');
      if (present.has(id) || this.volumes.has(id) || this.forgetting.has(id)) continue;
      rmSync(join(root, name), { recursive: true, force: true });
      this.opts.log.info({ instanceId: id }, 'removed the volume copy of an instance that no longer exists');
    }
  }

  private async forget(id: string, v: Volume): Promise<void> {
    if (this.forgetting.has(id)) return;
    this.forgetting.add(id);
    this.volumes.delete(id);
    try {
      await v.forget();
    } finally {
      this.forgetting.delete(id);
    }
  }

  private readonly flags = new Map<string, { running: boolean; member: boolean; eligible: boolean }>();

  private feedOne(v: Volume, flags?: { running: boolean; member: boolean; eligible: boolean }): void {
    if (flags) this.flags.set(v.instanceId, flags);
    const f = this.flags.get(v.instanceId) ?? { running: false, member: true, eligible: true };
    const writer = this.mirror.get(keys.volumeWriter(v.instanceId));
    const head = this.mirror.get(keys.volumeHead(v.instanceId));
    v.update({
      ...f,
      writer: writer?.kind === 'writer' ? writer.value : undefined,
      head: head?.kind === 'head' ? head.head : null,
    });
  }

  private feed(): void {
    for (const v of this.volumes.values()) this.feedOne(v);
  }

  private context() {
    const o = this.opts;
    return {
      registry: o.registry,
      log: o.log,
      nodeId: o.nodeId,
      keyPair: o.keyPair,
      store: this.chunks,
      transfer: this.transfer,
      limits: this.limits,
      intervalMs: o.intervalMs ?? 200,
      leaseTtlMs: this.leaseTtlMs,
      lease: () => this.writerLease(),
      members: (id: string) => o.view.quorumOf(id)?.members ?? [],
      nodeKey: (id: string) => o.view.node(id)?.publicKey ?? this.nodeKeys.get(id),
      pause: o.pause,
      drained: o.drained,
      ownerUid: o.ownerUid,
      changed: o.changed,
    };
  }

  /** One lease for every volume this node writes; its loss fences them all. */
  private writerLease(): Promise<Lease> {
    if (!this.lease) {
      const granted = this.opts.registry.grantLease(this.leaseTtlMs);
      this.lease = granted;
      granted.then(
        (lease) =>
          lease.onLost(() => {
            if (this.lease === granted) this.lease = null;
            for (const v of this.volumes.values()) v.fence('the writer lease was lost');
          }),
        () => {
          if (this.lease === granted) this.lease = null;
        },
      );
    }
    return this.lease;
  }

  /** Keeps the keys of every node seen, so heads stay verifiable after their writer's machine is gone. */
  private rememberKeys(): void {
    let changed = false;
    for (const n of this.opts.view.nodes.values()) {
      if (this.nodeKeys.get(n.id) === n.publicKey) continue;
      this.nodeKeys.set(n.id, n.publicKey);
      changed = true;
    }
    if (!changed) return;
    const tmp = `${this.keysFile}.tmp`;
    writeFileSync(tmp, JSON.stringify(Object.fromEntries(this.nodeKeys)), { mode: 0o600 });
    renameSync(tmp, this.keysFile);
  }

  /** Removes chunks that no volume held here needs (after the grace period). */
  collect(): void {
    const keep = new Set<string>();
    for (const v of this.volumes.values()) for (const c of v.wanted()) keep.add(c);
    const removed = this.chunks.collect(keep, GC_GRACE_MS);
    if (removed > 0) this.opts.log.debug({ removed }, 'volume chunks collected');
  }

  /** The agent is stopping and its replicas have stopped: writers commit their last snapshot and step down. */
  async close(): Promise<void> {
    if (this.gcTimer) clearInterval(this.gcTimer);
    await Promise.all([...this.volumes.values()].map((v) => v.close()));
    this.mirror.close();
    const lease = await this.lease?.catch(() => null);
    await lease?.revoke().catch(() => {});
  }
}
