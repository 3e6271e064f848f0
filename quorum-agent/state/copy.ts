/**
 * A quorum member's own copy of one instance's state, kept by a watch of the registry, verified at every
 * committed write: each write transaction also rewrites the meta record with the checksum of the state it
 * leaves (layout.ts), so after applying a batch of events the copy's incremental checksum must equal the
 * meta's. A copy that diverges (it missed an event, a bug, corrupted memory) is caught at the next write —
 * and by a periodic full recount in between — and repaired by reading the state again from the registry
 * (the log), then checked again.
 *
 * The copy also makes reads cheap and still linearizable (a "read index"): a reader asks the registry only
 * for the meta record's revision (one small consensus read) and is served from the copy once the copy has
 * applied at least that revision.
 */
import type { Logger } from 'pino';
import type { KeyValue, Registry, Watch, WatchEvent } from '../../protocol/registry.js';
import { checksumOf, EMPTY_META, entryBytes, nextChecksum, parseMeta, type StateMeta, stateKeys } from './layout.js';

export interface StateEntry {
  value: string;
  modRevision: number;
}

export interface CopyStatus {
  /** Registry revision of the last committed write this copy applied (the meta record's). */
  revision: number;
  checksum: string;
  /** Whether the copy's checksum equals the one committed with that write. */
  matches: boolean;
  repairs: number;
  keys: number;
  bytes: number;
}

export class StateUnavailable extends Error {}

/** Test-only fault injection (`ALLEGRA_STATE_FAULTS=drop-every:N`): drop every Nth value event on this node. */
function dropEvery(): number {
  const m = /^drop-every:(\d+)$/.exec(process.env.ALLEGRA_STATE_FAULTS ?? '');
  return m ? Number(m[1]) : 0;
}

export class StateCopy {
  readonly entries = new Map<string, StateEntry>();
  meta: StateMeta = EMPTY_META;
  /** modRevision of the meta record this copy holds (0: none yet). */
  metaRevision = 0;
  /** Highest registry revision applied (listing or events). */
  revision = 0;
  private checksum = EMPTY_META.checksum;
  private matches = true;
  private repairs = 0;
  private watch: Watch | null = null;
  private waiters: Array<{ revision: number; resolve: () => void }> = [];
  private scrubTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly valuesPrefix: string;
  private readonly metaKey: string;
  private readonly drop = dropEvery();
  private seen = 0;

  constructor(
    private readonly registry: Registry,
    readonly instanceId: string,
    private readonly log: Logger,
    private readonly onStatus: (status: CopyStatus) => void = () => {},
  ) {
    this.valuesPrefix = stateKeys.values(instanceId);
    this.metaKey = stateKeys.meta(instanceId);
  }

  async start(): Promise<this> {
    await this.resync();
    // A full recount now and then catches what incremental updates cannot (a flipped bit in memory).
    this.scrubTimer = setInterval(() => this.scrub(), 5_000);
    this.scrubTimer.unref();
    return this;
  }

  private resyncing: Promise<void> | null = null;
  private resyncAgain = false;
  /** Incremented per listing: events of an older watch are ignored. */
  private generation = 0;

  /**
   * Reads the whole state again from the registry and watches from there. One at a time: a repair asked
   * for while one runs is done once more after it (two listings racing would leave two watches).
   */
  private resync(): Promise<void> {
    if (this.resyncing) {
      this.resyncAgain = true;
      return this.resyncing;
    }
    this.resyncing = (async () => {
      try {
        do {
          this.resyncAgain = false;
          await this.resyncOnce();
        } while (this.resyncAgain && !this.closed);
      } finally {
        this.resyncing = null;
      }
    })();
    return this.resyncing;
  }

  private async resyncOnce(): Promise<void> {
    this.watch?.close();
    this.watch = null;
    const generation = ++this.generation;
    const { items, revision } = await this.registry.list(stateKeys.root(this.instanceId));
    if (this.closed || generation !== this.generation) return;
    this.rebuild(items, revision);
    this.watch = this.registry.watch(
      stateKeys.root(this.instanceId),
      (events) => {
        if (generation === this.generation) this.apply(events);
      },
      {
        fromRevision: revision + 1,
        onCompacted: () => void this.resync().catch((err) => this.log.warn({ err, instance: this.instanceId }, 'state resync failed')),
      },
    );
    this.verify('listing');
  }

  private rebuild(items: KeyValue[], revision: number): void {
    this.entries.clear();
    this.meta = EMPTY_META;
    this.metaRevision = 0;
    for (const kv of items) {
      if (kv.key === this.metaKey) {
        this.meta = parseMeta(kv.value) ?? EMPTY_META;
        this.metaRevision = kv.modRevision;
      } else if (kv.key.startsWith(this.valuesPrefix)) {
        this.entries.set(kv.key.slice(this.valuesPrefix.length), { value: kv.value, modRevision: kv.modRevision });
      }
    }
    this.checksum = checksumOf([...this.entries].map(([k, e]) => [k, e.value]));
    this.revision = Math.max(this.revision, revision);
    this.release();
  }

  private apply(events: WatchEvent[]): void {
    let sawMeta = false;
    for (const e of events) {
      this.revision = Math.max(this.revision, e.modRevision);
      if (e.key === this.metaKey) {
        if (e.type === 'put') {
          this.meta = parseMeta(e.value) ?? EMPTY_META;
          this.metaRevision = e.modRevision;
        } else {
          this.meta = EMPTY_META;
          this.metaRevision = e.modRevision;
        }
        sawMeta = true;
        continue;
      }
      if (!e.key.startsWith(this.valuesPrefix)) continue;
      if (this.drop > 0 && ++this.seen % this.drop === 0) continue; // test-only fault: this copy diverges
      const key = e.key.slice(this.valuesPrefix.length);
      const before = this.entries.get(key)?.value;
      if (e.type === 'put' && e.value !== undefined) {
        this.entries.set(key, { value: e.value, modRevision: e.modRevision });
        this.checksum = nextChecksum(this.checksum, key, before, e.value);
      } else if (before !== undefined) {
        this.entries.delete(key);
        this.checksum = nextChecksum(this.checksum, key, before, undefined);
      }
    }
    if (sawMeta) this.verify('write');
    this.release();
  }

  /** Compares the copy with the checksum committed with the last write it applied; repairs on mismatch. */
  private verify(after: 'write' | 'listing' | 'scrub'): void {
    const ok = this.checksum === this.meta.checksum;
    if (ok !== this.matches || after !== 'write') {
      this.matches = ok;
      this.onStatus(this.status());
    }
    if (ok || this.closed) return;
    this.log.warn(
      { instance: this.instanceId, revision: this.metaRevision, local: this.checksum, committed: this.meta.checksum, after },
      'state copy diverged from the committed checksum; repairing from the registry',
    );
    if (after === 'listing') return; // just re-read: the registry's own state does not match its meta record
    this.repairs++;
    void this.resync().catch((err) => this.log.warn({ err, instance: this.instanceId }, 'state repair failed'));
  }

  private scrub(): void {
    if (this.closed) return;
    const recount = checksumOf([...this.entries].map(([k, e]) => [k, e.value]));
    if (recount !== this.checksum) {
      this.log.warn({ instance: this.instanceId }, 'state copy changed in memory without an event; repairing');
      this.checksum = recount;
    }
    if (this.checksum !== this.meta.checksum && this.waiters.length === 0) this.verify('scrub');
  }

  status(): CopyStatus {
    let bytes = 0;
    for (const [k, e] of this.entries) bytes += entryBytes(k, e.value);
    return {
      revision: this.metaRevision,
      checksum: this.checksum,
      matches: this.matches,
      repairs: this.repairs,
      keys: this.entries.size,
      bytes,
    };
  }

  /** Resolves once the copy has applied the write committed at `metaRevision`. */
  waitFor(metaRevision: number, timeoutMs: number): Promise<void> {
    if (this.metaRevision >= metaRevision) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { revision: metaRevision, resolve };
      this.waiters.push(waiter);
      setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i < 0) return;
        this.waiters.splice(i, 1);
        reject(new StateUnavailable(`this member's copy did not catch up with revision ${metaRevision} in time`));
      }, timeoutMs).unref();
    });
  }

  private release(): void {
    if (this.waiters.length === 0) return;
    const ready = this.waiters.filter((w) => w.revision <= this.metaRevision);
    this.waiters = this.waiters.filter((w) => w.revision > this.metaRevision);
    for (const w of ready) w.resolve();
  }

  /**
   * Makes the copy provably current: one consensus read of the meta record's revision, then waits for the
   * copy to have applied it. Every write acknowledged before this call is then visible in the copy.
   */
  async current(timeoutMs = 2_000): Promise<void> {
    let kv: KeyValue | undefined;
    try {
      kv = await this.registry.get(this.metaKey);
    } catch (err) {
      throw new StateUnavailable(`no majority of the registry can be reached (${(err as Error).message})`);
    }
    await this.waitFor(kv?.modRevision ?? 0, timeoutMs);
  }

  close(): void {
    this.closed = true;
    this.watch?.close();
    if (this.scrubTimer) clearInterval(this.scrubTimer);
    for (const w of this.waiters) w.resolve();
    this.waiters = [];
  }
}
