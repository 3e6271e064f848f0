/**
 * One instance's volume as one quorum member sees it. A member is a follower (it keeps a complete copy of
 * the newest committed snapshot, pulling what it missed) until it becomes the writer:
 *
 *   follower ──writer record absent, instance running──▶ taking-over (won the writer record under its lease;
 *   restores the newest committed snapshot) ──▶ writing (the replica runs on the live directory; every
 *   interval a changed volume is captured with the replica paused, pushed to the members and committed as
 *   the new head once a majority holds it) ──instance stopped / no longer a member / agent stopping──▶
 *   stepping-down (the replica stops first, then a last capture is committed and the writer record released:
 *   nothing is lost) ──▶ follower.
 *
 * Fencing: a writer that cannot prove it still holds the writer record (lease lost, the record changed, no
 * registry answer for half the lease TTL) is `fenced`: its replica is stopped at once and nothing more of it
 * is committed — every commit is a transaction guarded by the writer record being its own.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import type { Logger } from 'pino';
import { keys } from '../../protocol/keys.js';
import { signRecord, verifyRecord } from '../../protocol/records.js';
import type { Lease, Registry } from '../../protocol/registry.js';
import { parseRecord } from '../../protocol/schemas.js';
import type { KeyPair } from '../../protocol/signing.js';
import { SerialPass } from '../serial-pass.js';
import { type CaptureIndex, capture, changedSince, VolumeTooLarge } from './capture.js';
import type { ChunkStore } from './chunks.js';
import type { Thaw } from './freeze.js';
import { chunksOf, decodeManifest, encodeManifest, type Manifest, type VolumeHead, type VolumeLimits, volumeHead } from './layout.js';
import { restore } from './restore.js';
import { stageFiles } from './stage.js';
import type { ChunkTransfer } from './transfer.js';

export type VolumeRole = 'follower' | 'taking-over' | 'writing' | 'stepping-down' | 'fenced';

export interface VolumeContext {
  registry: Registry;
  log: Logger;
  nodeId: string;
  keyPair: KeyPair;
  store: ChunkStore;
  transfer: ChunkTransfer;
  limits: VolumeLimits;
  intervalMs: number;
  leaseTtlMs: number;
  /** The service's writer lease (granted on first use, replaced after a loss). */
  lease(): Promise<Lease>;
  /** The instance's quorum members (majorities are counted over all of them). */
  members(instanceId: string): string[];
  /** A node's public key: live, or remembered from when it was. */
  nodeKey(nodeId: string): string | undefined;
  pause(instanceId: string): Promise<Thaw | null>;
  drained(instanceId: string): Promise<boolean>;
  ownerUid(instanceId: string): number | undefined;
  /** The set of replicas this node should run changed (the agent reconciles). */
  changed(): void;
}

/** What differs between one volume and another: a VM's disk is one big file, captured less often. */
export interface VolumeTuning {
  limits: VolumeLimits;
  /** How often the writer captures a changed volume. */
  intervalMs: number;
  /** How long a stepping-down writer waits for its replica to stop before its last capture. */
  stepDownMs: number;
  /**
   * Which changes pause the replica for the capture: only in-place ones (files an app rewrites by rename are
   * whole once in place), or any (a VM writes its one image in place, new or not, all the time).
   */
  pauseOn: 'in-place' | 'any';
  /** Capture from a copy made while paused (stage.ts) rather than pause for the whole capture. */
  stage: boolean;
}

export interface VolumeStatus {
  role: VolumeRole;
  writer: string | null;
  seq: number;
  capturedAt: number | null;
  /** This member holds the newest head's manifest and every chunk of it. */
  complete: boolean;
  problem?: string;
}

/** How long a member without a complete copy lets complete ones go first. */
const INCOMPLETE_DELAY_MS = 1_000;
export const STEP_DOWN_DEADLINE_MS = 5_000;
const COMPLETE_RECHECK_MS = 10_000;

export class Volume {
  role: VolumeRole = 'follower';
  private running = false;
  private member = true;
  /** This node can run the replica (it offers the instance's driver): only then does it campaign. */
  private eligible = true;
  private writerValue: string | undefined;
  private writerSeenAbsentAt: number | null = null;
  /** The newest head this member knows of, and its registry modRevision when read by this writer. */
  private head: VolumeHead | null = null;
  private headRev = 0;
  private term = 0;
  private myWriter: string | null = null;
  private index: CaptureIndex = new Map();
  private pending: { sha: string; manifest: Manifest; capturedAt: number; bytes: number } | null = null;
  /** Chunks each member is known to hold this term. */
  private readonly held = new Map<string, Set<string>>();
  private readonly manifests = new Map<string, Manifest>();
  private readonly pass: SerialPass;
  private tick: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private confirmedAt = 0;
  private confirming = false;
  private retryAt = 0;
  private closed = false;
  problem: string | undefined;
  /** Resolves when a step-down (or forget) has finished. */
  private settled: Promise<void> = Promise.resolve();

  private tuning: VolumeTuning;

  constructor(
    private readonly ctx: VolumeContext,
    readonly instanceId: string,
    readonly liveDir: string,
    tuning: Partial<VolumeTuning> = {},
  ) {
    this.tuning = {
      limits: ctx.limits,
      intervalMs: ctx.intervalMs,
      stepDownMs: STEP_DOWN_DEADLINE_MS,
      pauseOn: 'in-place',
      stage: false,
      ...tuning,
    };
    this.pass = new SerialPass(
      () => this.step(),
      (err) => {
        this.problem = (err as Error).message;
        this.ctx.log.warn({ err, instanceId }, 'volume pass failed');
      },
    );
  }

  /** New limits or intervals (the instance's disk grew): they apply from the next round. */
  retune(tuning: Partial<VolumeTuning>): void {
    const next = { ...this.tuning, ...tuning };
    if (next.intervalMs !== this.tuning.intervalMs && this.tick) {
      clearInterval(this.tick);
      this.tick = setInterval(() => this.pass.request(), next.intervalMs);
      this.tick.unref();
    }
    this.tuning = next;
  }

  private get stageDir(): string {
    return `${this.liveDir}.stage`;
  }

  private get writerKey(): string {
    return keys.volumeWriter(this.instanceId);
  }

  /** The live directory the writer's replica mounts, or null: only a writer that finished taking over has one. */
  ready(): string | null {
    return this.role === 'writing' ? this.liveDir : null;
  }

  /** What the registry and the spec say now; runs a pass when something changed. */
  update(o: { running: boolean; member: boolean; eligible?: boolean; writer: string | undefined; head: VolumeHead | null }): void {
    this.running = o.running;
    this.member = o.member;
    this.eligible = o.eligible ?? true;
    this.writerValue = o.writer;
    if (o.writer === undefined) this.writerSeenAbsentAt ??= Date.now();
    else this.writerSeenAbsentAt = null;
    if (o.head && this.acceptHead(o.head) && (!this.head || o.head.seq > this.head.seq)) this.head = o.head;
    if (this.role === 'writing' && o.writer !== this.myWriter && o.writer !== undefined)
      this.fence('another member holds the writer record');
    this.pass.request();
  }

  private acceptHead(h: VolumeHead): boolean {
    const key = this.ctx.nodeKey(h.writer);
    if (h.instanceId !== this.instanceId || !key || !verifyRecord(h, key)) {
      this.problem = `ignored a volume head not signed by its writer ${h.writer}`;
      return false;
    }
    return true;
  }

  status(): VolumeStatus {
    return {
      role: this.role,
      writer: this.role === 'writing' ? this.ctx.nodeId : this.writerValue ? (safeParse(this.writerValue)?.nodeId ?? null) : null,
      seq: this.head?.seq ?? 0,
      capturedAt: this.head?.capturedAt ?? null,
      complete: this.head ? this.holdsComplete(this.head) : true,
      ...(this.problem ? { problem: this.problem } : {}),
    };
  }

  /** Chunks this member must keep: those of the newest head and of a snapshot being committed. */
  wanted(): ReadonlySet<string> {
    const m = this.head ? this.manifestOf(this.head.manifest) : undefined;
    // Asked for every chunk a member requests (rpc.ts) and by collection: kept until what it derives from
    // changes (a VM disk's sets have thousands of chunks).
    const key = `${this.head?.manifest ?? ''}:${m ? 1 : 0}:${this.pending?.sha ?? ''}`;
    if (this.wantedMemo?.key === key && this.wantedMemo.index === this.index) return this.wantedMemo.set;
    const out = new Set<string>();
    if (this.head && m) for (const c of chunksOf(this.head.manifest, m)) out.add(c);
    if (this.pending) for (const c of chunksOf(this.pending.sha, this.pending.manifest)) out.add(c);
    for (const e of this.index.values()) for (const c of e.chunks) out.add(c);
    this.wantedMemo = { key, index: this.index, set: out };
    return out;
  }

  private wantedMemo: { key: string; index: CaptureIndex; set: Set<string> } | null = null;
  /** The head manifest last found held whole, and when: status() asks every second. */
  private completeMemo: { manifest: string; at: number } | null = null;

  private manifestOf(sha: string): Manifest | undefined {
    const cached = this.manifests.get(sha);
    if (cached) return cached;
    const bytes = this.ctx.store.readVerified(sha);
    if (!bytes) return undefined;
    const m = decodeManifest(bytes, this.instanceId, this.tuning.limits);
    this.manifests.clear(); // one current manifest is enough to keep decoded
    this.manifests.set(sha, m);
    return m;
  }

  private holdsComplete(h: VolumeHead): boolean {
    // A copy found whole stays whole (collection keeps wanted chunks); checked again now and then in case
    // a damaged chunk was dropped since.
    if (this.completeMemo?.manifest === h.manifest && Date.now() - this.completeMemo.at < COMPLETE_RECHECK_MS) return true;
    try {
      const m = this.manifestOf(h.manifest);
      const whole = m !== undefined && [...chunksOf(h.manifest, m)].every((c) => this.ctx.store.has(c));
      this.completeMemo = whole ? { manifest: h.manifest, at: Date.now() } : null;
      return whole;
    } catch {
      return false;
    }
  }

  private async step(): Promise<void> {
    if (this.closed) return;
    switch (this.role) {
      case 'follower':
        await this.follow();
        return;
      case 'writing':
        if (!this.running || !this.member || !this.eligible) {
          this.beginStepDown();
          return this.step();
        }
        await this.round();
        return;
      case 'stepping-down':
        return;
      case 'fenced':
        if (await this.ctx.drained(this.instanceId)) {
          await this.releaseIfMine().catch(() => {});
          this.myWriter = null;
          this.role = 'follower';
          this.pass.request();
        }
        return;
      case 'taking-over':
        return;
    }
  }

  // ── follower ────────────────────────────────────────────────────────────────────────────────────

  private async follow(): Promise<void> {
    if (this.head && !this.holdsComplete(this.head)) {
      try {
        await this.pull(this.head);
        this.problem = undefined;
      } catch (err) {
        this.problem = `copy incomplete: ${(err as Error).message}`;
        this.later(1_000);
      }
    }
    // A record of ours from before a fence or restart is released, so the election can run again.
    if (this.writerValue && safeParse(this.writerValue)?.nodeId === this.ctx.nodeId) {
      await this.releaseIfMine().catch(() => this.later(500));
      return;
    }
    if (!this.running || !this.member || !this.eligible || this.writerValue !== undefined) return;
    if (Date.now() < this.retryAt) return this.later(this.retryAt - Date.now());
    // Members holding the newest copy go first; the others wait a moment, then take over (and pull).
    const complete = !this.head || this.holdsComplete(this.head);
    const waited = Date.now() - (this.writerSeenAbsentAt ?? Date.now());
    if (!complete && waited < INCOMPLETE_DELAY_MS) return this.later(INCOMPLETE_DELAY_MS - waited);
    await this.campaign();
  }

  /** Fetches the head's manifest, then every chunk it names, from the holders (then any member). */
  private async pull(h: VolumeHead): Promise<void> {
    const from = [...new Set([...h.holders, ...this.ctx.members(this.instanceId)])];
    await this.ctx.transfer.fetch(this.instanceId, h.manifest, from);
    const m = this.manifestOf(h.manifest);
    if (!m) throw new Error('the manifest could not be read back');
    await this.ctx.transfer.fetchAll(this.instanceId, chunksOf(h.manifest, m), from);
  }

  private later(ms: number): void {
    const t = setTimeout(() => this.pass.request(), Math.max(10, ms));
    t.unref();
  }

  // ── taking over ─────────────────────────────────────────────────────────────────────────────────

  private async campaign(): Promise<void> {
    const lease = await this.ctx.lease();
    const record = { instanceId: this.instanceId, nodeId: this.ctx.nodeId, nonce: randomBytes(8).toString('hex'), since: Date.now() };
    const value = JSON.stringify(record);
    const res = await this.ctx.registry.txn({
      compare: [{ key: this.writerKey, target: 'version', equals: 0 }],
      success: [{ type: 'put', key: this.writerKey, value, lease: lease.id }],
    });
    if (!res.succeeded) return;
    this.myWriter = value;
    this.writerValue = value;
    this.term = res.revision;
    this.role = 'taking-over';
    this.confirmedAt = Date.now();
    this.startWatchdog();
    const started = Date.now();
    try {
      await this.takeOver();
    } catch (err) {
      this.problem = `could not take over: ${(err as Error).message}`;
      this.ctx.log.warn({ err, instanceId: this.instanceId }, 'volume takeover failed; releasing the writer record');
      this.stopTimers();
      this.role = 'follower';
      this.myWriter = null;
      this.retryAt = Date.now() + 2_000;
      await this.releaseIfMine(value).catch(() => {});
      this.later(2_000);
      return;
    }
    if (this.role !== 'taking-over') return; // fenced meanwhile
    this.role = 'writing';
    this.problem = undefined;
    this.ctx.log.info(
      { instanceId: this.instanceId, term: this.term, seq: this.head?.seq ?? 0, restoreMs: Date.now() - started },
      'volume writer: took over from the newest complete copy',
    );
    this.tick = setInterval(() => this.pass.request(), this.tuning.intervalMs);
    this.tick.unref();
    this.ctx.changed();
  }

  /** Restores the newest committed snapshot (read from the registry, not the watch) as the live directory. */
  private async takeOver(): Promise<void> {
    const kv = await this.ctx.registry.get(keys.volumeHead(this.instanceId));
    this.headRev = kv?.modRevision ?? 0;
    const head = kv ? parseHead(kv.value) : null;
    if (kv && (!head || !this.acceptHead(head))) throw new Error('the committed head cannot be verified');
    this.head = head;
    this.held.clear();
    this.pending = null;
    if (!head) {
      rmSync(this.liveDir, { recursive: true, force: true });
      mkdirSync(this.liveDir, { recursive: true, mode: 0o755 });
      this.index = new Map();
      return;
    }
    if (!this.holdsComplete(head)) await this.pull(head);
    const m = this.manifestOf(head.manifest);
    if (!m) throw new Error('the manifest could not be read');
    this.index = restore(m, this.ctx.store, this.liveDir);
    const all = chunksOf(head.manifest, m);
    for (const h of head.holders) this.held.set(h, new Set(all));
  }

  // ── writing ─────────────────────────────────────────────────────────────────────────────────────

  private captureOptions() {
    const uid = this.ctx.ownerUid(this.instanceId);
    return { limits: this.tuning.limits, ...(uid === undefined ? {} : { ownerUid: uid }) };
  }

  /**
   * One capture-and-commit round. The replica is paused only when a file changed in place (a database):
   * pausing costs the app a few milliseconds, and some apps race with themselves when paused (json-server
   * reloads db.json on every change event and can drop a write that lands during the reload), so files that
   * are only replaced (write, then rename) are read without a pause — each is whole once it is in place.
   * `paused`: false once the replica has stopped (nothing to pause).
   */
  private async round(paused = true): Promise<void> {
    const opts = this.captureOptions();
    const change = await changedSince(this.liveDir, this.index, opts);
    if (change !== 'none') {
      let thaw: Thaw | null = null;
      if (paused && (change === 'in-place' || this.tuning.pauseOn === 'any')) {
        try {
          thaw = await this.ctx.pause(this.instanceId);
        } catch (err) {
          this.problem = `could not pause the replica: ${(err as Error).message}`;
          return;
        }
      }
      const capturedAt = Date.now();
      let cap: Awaited<ReturnType<typeof capture>>;
      try {
        if (this.tuning.stage) {
          // Paused only for the copy; the live stamps taken meanwhile are what the next round compares with.
          let stamps: Map<string, string>;
          try {
            stamps = await stageFiles(this.liveDir, this.stageDir);
          } finally {
            thaw?.();
            thaw = null;
          }
          try {
            cap = await capture(this.stageDir, this.instanceId, new Map(), this.ctx.store, { ...opts, holes: true });
          } finally {
            rmSync(this.stageDir, { recursive: true, force: true }); // the copy is a disk's worth of blocks
          }
          for (const [path, entry] of cap.index) {
            const live = stamps.get(path);
            if (live) cap.index.set(path, { ...entry, stamp: live });
          }
        } else cap = await capture(this.liveDir, this.instanceId, this.index, this.ctx.store, opts);
      } catch (err) {
        if (!(err instanceof VolumeTooLarge)) throw err;
        this.problem = `not replicated: ${err.message}`;
        return;
      } finally {
        thaw?.();
      }
      // Without a pause, a file that changed while it was read is tried again next round.
      if (cap.unstable) return;
      this.index = cap.index;
      const bytes = encodeManifest(cap.manifest);
      const sha = this.ctx.store.putLocal(bytes);
      this.ctx.store.flush();
      if (sha !== this.head?.manifest) this.pending = { sha, manifest: cap.manifest, capturedAt, bytes: cap.bytes };
      else this.pending = null;
      if (cap.skipped.length > 0) this.problem = `left out: ${cap.skipped.slice(0, 3).join(', ')}${cap.skipped.length > 3 ? ', …' : ''}`;
    }
    if (this.pending) await this.commit(this.pending);
  }

  /** Pushes a snapshot to the members and commits it as the head once a majority holds it. */
  private async commit(p: NonNullable<Volume['pending']>): Promise<boolean> {
    const members = this.ctx.members(this.instanceId);
    const needed = Math.floor(members.length / 2) + 1;
    const all = chunksOf(p.sha, p.manifest);
    // All at once, the manifest with its chunks: a member counts as a holder only once every one of them is
    // acknowledged (durable there), and a copy is complete only when every chunk it names is held, so the
    // order does not matter — and one round trip (one fsync there) less per snapshot is RPO saved.
    const order = [...all];
    const holders = [this.ctx.nodeId];
    const others = members.filter((m) => m !== this.ctx.nodeId);
    await new Promise<void>((resolve) => {
      let left = others.length;
      const settle = () => {
        if (holders.length >= needed || left === 0) resolve();
      };
      settle();
      for (const m of others) {
        void this.pushAll(m, order).then((ok) => {
          if (ok) holders.push(m);
          left--;
          settle();
        });
      }
    });
    if (holders.length < needed) {
      this.problem = `snapshot not committed: ${holders.length} of ${members.length} members hold it, ${needed} needed`;
      return false;
    }
    const head: VolumeHead = {
      instanceId: this.instanceId,
      writer: this.ctx.nodeId,
      term: this.term,
      seq: (this.head?.seq ?? 0) + 1,
      manifest: p.sha,
      bytes: p.bytes,
      entries: p.manifest.entries.length,
      capturedAt: p.capturedAt,
      committedAt: Date.now(),
      holders: [...holders],
    };
    const signed = signRecord(this.ctx.keyPair, head);
    const headKey = keys.volumeHead(this.instanceId);
    const res = await this.ctx.registry.txn({
      compare: [
        { key: this.writerKey, target: 'value', equals: this.myWriter ?? '' },
        this.headRev === 0 ? { key: headKey, target: 'version', equals: 0 } : { key: headKey, target: 'modRevision', equals: this.headRev },
      ],
      success: [{ type: 'put', key: headKey, value: JSON.stringify(signed) }],
    });
    if (!res.succeeded) {
      this.fence('a snapshot commit was refused: this member is no longer the writer');
      return false;
    }
    this.confirmedAt = Math.max(this.confirmedAt, head.committedAt);
    this.headRev = res.revision;
    this.head = signed;
    if (this.pending === p) this.pending = null;
    for (const [m, set] of this.held) if (!holders.includes(m)) for (const c of set) if (!all.has(c)) set.delete(c);
    for (const m of holders) this.held.set(m, new Set(all));
    if (this.problem?.startsWith('snapshot not committed')) this.problem = undefined;
    return true;
  }

  /** Sends `order` to member `m` (what it is not known to hold), four at a time; true once it holds all. */
  private async pushAll(m: string, order: string[]): Promise<boolean> {
    let set = this.held.get(m);
    if (!set) {
      set = new Set();
      this.held.set(m, set);
    }
    const known = set;
    const todo = order.filter((c) => !known.has(c));
    let failed = false;
    let next = 0;
    const worker = async () => {
      while (!failed && next < todo.length) {
        const sha = todo[next++] as string;
        if (await this.ctx.transfer.push(this.instanceId, m, sha)) known.add(sha);
        else failed = true;
      }
    };
    await Promise.all(Array.from({ length: Math.min(4, todo.length) }, worker));
    if (failed) return false;
    return true;
  }

  // ── stepping down, fencing ──────────────────────────────────────────────────────────────────────

  /** Stops the replica first, then commits what it wrote last and releases the writer record. */
  private beginStepDown(): void {
    if (this.role !== 'writing') return;
    this.role = 'stepping-down';
    if (this.tick) clearInterval(this.tick);
    this.tick = null;
    this.ctx.changed();
    this.settled = (async () => {
      const deadline = Date.now() + this.tuning.stepDownMs;
      while (!(await this.ctx.drained(this.instanceId)) && Date.now() < deadline) await sleep(50);
      for (;;) {
        try {
          await this.round(false);
          if (!this.pending) break;
        } catch (err) {
          this.problem = `last snapshot not committed: ${(err as Error).message}`;
        }
        if (this.role !== 'stepping-down' || Date.now() > deadline) break;
        await sleep(200);
      }
      if (this.role === 'stepping-down') {
        await this.releaseIfMine().catch(() => {});
        this.ctx.log.info({ instanceId: this.instanceId, seq: this.head?.seq ?? 0 }, 'volume writer stepped down');
        this.stopTimers();
        this.myWriter = null;
        this.role = 'follower';
      }
      this.pass.request();
    })();
  }

  /** Stops being the writer at once: the replica is stopped, nothing more is committed. */
  fence(reason: string): void {
    if (this.role !== 'writing' && this.role !== 'taking-over' && this.role !== 'stepping-down') return;
    this.ctx.log.warn({ instanceId: this.instanceId, reason }, 'volume writer fenced: stopping its replica');
    this.problem = `fenced: ${reason}`;
    this.stopTimers();
    this.role = 'fenced';
    this.pending = null;
    this.ctx.changed();
    this.pass.request();
  }

  private async releaseIfMine(value = this.myWriter ?? this.writerValue): Promise<void> {
    if (!value || safeParse(value)?.nodeId !== this.ctx.nodeId) return;
    await this.ctx.registry.txn({
      compare: [{ key: this.writerKey, target: 'value', equals: value }],
      success: [{ type: 'delete', key: this.writerKey }],
    });
  }

  /**
   * Proves, every tenth of the lease TTL, that the writer record is still ours; without an answer for half
   * the TTL the writer fences itself, well before the registry could let the lease expire (at the earliest
   * two thirds of a TTL after the last renewal that got through, since renewals go out every third).
   */
  private startWatchdog(): void {
    const every = Math.max(50, Math.floor(this.ctx.leaseTtlMs / 10));
    this.watchdog = setInterval(() => {
      if (Date.now() - this.confirmedAt > this.ctx.leaseTtlMs / 2) {
        this.fence('the registry has not confirmed the writer record for half the lease TTL');
        return;
      }
      if (this.confirming) return;
      this.confirming = true;
      const sent = Date.now();
      void this.ctx.registry
        .get(this.writerKey)
        .then((kv) => {
          if (kv?.value === this.myWriter) this.confirmedAt = Math.max(this.confirmedAt, sent);
          else this.fence('the writer record is no longer this member’s');
        })
        .catch(() => {})
        .finally(() => {
          this.confirming = false;
        });
    }, every);
    this.watchdog.unref();
  }

  private stopTimers(): void {
    if (this.tick) clearInterval(this.tick);
    if (this.watchdog) clearInterval(this.watchdog);
    this.tick = null;
    this.watchdog = null;
  }

  /** The agent is stopping (its replicas already stopped): a writer commits its last snapshot and steps down. */
  async close(): Promise<void> {
    if (this.role === 'writing') this.beginStepDown();
    await this.settled;
    this.closed = true;
    this.pass.stop();
    this.stopTimers();
  }

  /** The instance left this node (deleted, or another quorum holds it): stop and drop the live directory. */
  async forget(): Promise<void> {
    this.fence('the instance left this node');
    this.closed = true;
    this.pass.stop();
    this.stopTimers();
    const deadline = Date.now() + this.tuning.stepDownMs;
    while (!(await this.ctx.drained(this.instanceId)) && Date.now() < deadline) await sleep(50);
    rmSync(this.liveDir, { recursive: true, force: true });
    rmSync(this.stageDir, { recursive: true, force: true });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function safeParse(value: string): { nodeId?: string } | undefined {
  try {
    return JSON.parse(value) as { nodeId?: string };
  } catch {
    return undefined;
  }
}

function parseHead(raw: string): VolumeHead | null {
  return parseRecord(volumeHead, raw) ?? null;
}
