/**
 * The embedded registry's state machine: keys with etcd-style revisions, multi-key transactions, a bounded
 * event history for watches that resume, and leases. Synchronous and in-memory; durability is delegated to
 * a `Journal` that sees every committed change before watchers do.
 */
import { randomBytes } from 'node:crypto';
import type { Compare, KeyValue, Op, RangeResult, TxnRequest, TxnResult, WatchEvent } from '../protocol/registry.js';

export interface LeaseState {
  id: string;
  ttlMs: number;
  expiresAt: number;
  keys: Set<string>;
}

/** What a journal must persist so that `Store.restore` can rebuild the state. */
export type JournalEntry =
  | { kind: 'txn'; revision: number; ops: Array<{ t: 'p'; k: string; v: string; l?: string } | { t: 'd'; k: string }> }
  | { kind: 'lease'; id: string; ttlMs: number }
  /** A revocation and the deletion of the lease's keys are one entry: a crash cannot keep keys of a dead lease. */
  | { kind: 'revoke'; id: string; revision?: number; ops?: Array<{ t: 'd'; k: string }> };

export interface Snapshot {
  revision: number;
  kvs: KeyValue[];
  leases: Array<{ id: string; ttlMs: number }>;
}

export interface Journal {
  append(entry: JournalEntry): void;
}

type Listener = (events: WatchEvent[]) => void;

interface WatchRegistration {
  prefix: string;
  listener: Listener;
}

export class WatchCompactedError extends Error {
  constructor(readonly currentRevision: number) {
    super('requested revision has been compacted');
  }
}

export class Store {
  private readonly kvs = new Map<string, KeyValue>();
  private readonly leases = new Map<string, LeaseState>();
  private readonly watchers = new Set<WatchRegistration>();
  /** Recent events, oldest first, for watches that start in the past. */
  private readonly history: WatchEvent[] = [];
  private revisionValue = 0;
  /** Events with modRevision <= compactedRevision are no longer in `history`. */
  private compactedRevision = 0;

  constructor(
    private readonly journal: Journal | null = null,
    private readonly opts: { historySize?: number; now?: () => number } = {},
  ) {}

  get revision(): number {
    return this.revisionValue;
  }

  private now(): number {
    return this.opts.now ? this.opts.now() : Date.now();
  }

  get(key: string): KeyValue | undefined {
    const kv = this.kvs.get(key);
    return kv ? { ...kv } : undefined;
  }

  range(prefix: string): RangeResult {
    const items: KeyValue[] = [];
    for (const kv of this.kvs.values()) if (kv.key.startsWith(prefix)) items.push({ ...kv });
    items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { items, revision: this.revisionValue };
  }

  txn(request: TxnRequest): TxnResult {
    const succeeded = request.compare.every((c) => this.compare(c));
    const ops = succeeded ? request.success : (request.failure ?? []);
    for (const op of ops) {
      if (op.type === 'put' && op.lease !== undefined && !this.leases.has(op.lease)) {
        throw new Error(`lease ${op.lease} not found`);
      }
    }
    this.apply(ops);
    return { succeeded, revision: this.revisionValue };
  }

  private compare(c: Compare): boolean {
    const kv = this.kvs.get(c.key);
    switch (c.target) {
      case 'modRevision':
        return (kv?.modRevision ?? 0) === c.equals;
      case 'version':
        return (kv?.version ?? 0) === c.equals;
      case 'value':
        return kv !== undefined && kv.value === c.equals;
    }
  }

  /** Applies write operations as one revision; a transaction that changes nothing keeps the revision. */
  private apply(ops: Op[], fromJournal = false): void {
    const expanded: Array<{ t: 'p'; k: string; v: string; l?: string } | { t: 'd'; k: string }> = [];
    for (const op of ops) {
      if (op.type === 'put') expanded.push(op.lease ? { t: 'p', k: op.key, v: op.value, l: op.lease } : { t: 'p', k: op.key, v: op.value });
      else if (op.type === 'delete') {
        if (this.kvs.has(op.key)) expanded.push({ t: 'd', k: op.key });
      } else {
        for (const key of this.kvs.keys()) if (key.startsWith(op.prefix)) expanded.push({ t: 'd', k: key });
      }
    }
    if (expanded.length === 0) return;
    const revision = this.revisionValue + 1;
    if (!fromJournal) this.journal?.append({ kind: 'txn', revision, ops: expanded });
    this.applyExpanded(revision, expanded);
  }

  private applyExpanded(revision: number, ops: Array<{ t: 'p'; k: string; v: string; l?: string } | { t: 'd'; k: string }>): void {
    this.revisionValue = revision;
    const events: WatchEvent[] = [];
    for (const op of ops) {
      const prev = this.kvs.get(op.k);
      if (prev?.lease) this.leases.get(prev.lease)?.keys.delete(op.k);
      if (op.t === 'p') {
        const kv: KeyValue = {
          key: op.k,
          value: op.v,
          createRevision: prev ? prev.createRevision : revision,
          modRevision: revision,
          version: prev ? prev.version + 1 : 1,
        };
        if (op.l) {
          kv.lease = op.l;
          this.leases.get(op.l)?.keys.add(op.k);
        }
        this.kvs.set(op.k, kv);
        events.push({ type: 'put', key: op.k, value: op.v, modRevision: revision });
      } else if (prev) {
        this.kvs.delete(op.k);
        events.push({ type: 'delete', key: op.k, modRevision: revision });
      }
    }
    this.record(events);
  }

  private record(events: WatchEvent[]): void {
    const limit = this.opts.historySize ?? 10_000;
    for (const e of events) this.history.push(e);
    if (this.history.length > limit) {
      const dropped = this.history.splice(0, this.history.length - limit);
      this.compactedRevision = (dropped[dropped.length - 1] as WatchEvent).modRevision;
    }
    for (const w of this.watchers) {
      const mine = events.filter((e) => e.key.startsWith(w.prefix));
      if (mine.length > 0) w.listener(mine);
    }
  }

  /**
   * Registers a watcher. Events since `fromRevision` are replayed synchronously before this returns.
   * Throws WatchCompactedError if that history is gone.
   */
  watch(prefix: string, listener: Listener, fromRevision?: number): () => void {
    if (fromRevision !== undefined && fromRevision <= this.revisionValue) {
      if (fromRevision <= this.compactedRevision) throw new WatchCompactedError(this.revisionValue);
      const past = this.history.filter((e) => e.modRevision >= fromRevision && e.key.startsWith(prefix));
      if (past.length > 0) listener(past);
    }
    const reg = { prefix, listener };
    this.watchers.add(reg);
    return () => this.watchers.delete(reg);
  }

  grantLease(ttlMs: number): LeaseState {
    if (!(ttlMs >= 100)) throw new Error('lease TTL must be at least 100 ms');
    const id = randomBytes(8).toString('hex');
    this.journal?.append({ kind: 'lease', id, ttlMs });
    const lease: LeaseState = { id, ttlMs, expiresAt: this.now() + ttlMs, keys: new Set() };
    this.leases.set(id, lease);
    return lease;
  }

  /** Returns false when the lease no longer exists (expired or revoked). */
  keepAlive(id: string): boolean {
    const lease = this.leases.get(id);
    if (!lease) return false;
    lease.expiresAt = this.now() + lease.ttlMs;
    return true;
  }

  revokeLease(id: string): void {
    const lease = this.leases.get(id);
    if (!lease) return;
    const ops = [...lease.keys].filter((k) => this.kvs.has(k)).map((k) => ({ t: 'd' as const, k }));
    const revision = this.revisionValue + 1;
    this.journal?.append(ops.length > 0 ? { kind: 'revoke', id, revision, ops } : { kind: 'revoke', id });
    this.leases.delete(id);
    if (ops.length > 0) this.applyExpanded(revision, ops);
  }

  /** Keys attached to a lease, for the permission check of a revocation. */
  leaseKeys(id: string): string[] {
    return [...(this.leases.get(id)?.keys ?? [])];
  }

  /** Expires leases whose time has come; call periodically. */
  expireLeases(): void {
    const now = this.now();
    for (const lease of [...this.leases.values()]) if (lease.expiresAt <= now) this.revokeLease(lease.id);
  }

  hasLease(id: string): boolean {
    return this.leases.has(id);
  }

  snapshot(): Snapshot {
    return {
      revision: this.revisionValue,
      kvs: [...this.kvs.values()].map((kv) => ({ ...kv })),
      leases: [...this.leases.values()].map((l) => ({ id: l.id, ttlMs: l.ttlMs })),
    };
  }

  /**
   * Rebuilds state from a snapshot and the journal entries written after it. Leases get a full TTL from
   * now, as etcd does after a leader change: a holder that is still alive renews them in time.
   */
  restore(snapshot: Snapshot | null, entries: Iterable<JournalEntry>): void {
    const now = this.now();
    if (snapshot) {
      this.revisionValue = snapshot.revision;
      for (const l of snapshot.leases) this.leases.set(l.id, { id: l.id, ttlMs: l.ttlMs, expiresAt: now + l.ttlMs, keys: new Set() });
      for (const kv of snapshot.kvs) {
        this.kvs.set(kv.key, { ...kv });
        if (kv.lease) this.leases.get(kv.lease)?.keys.add(kv.key);
      }
    }
    for (const entry of entries) {
      if (entry.kind === 'lease')
        this.leases.set(entry.id, { id: entry.id, ttlMs: entry.ttlMs, expiresAt: now + entry.ttlMs, keys: new Set() });
      else if (entry.kind === 'revoke') {
        this.leases.delete(entry.id);
        if (entry.ops && entry.revision !== undefined && entry.revision > this.revisionValue) this.applyExpanded(entry.revision, entry.ops);
      } else if (entry.revision > this.revisionValue) this.applyExpanded(entry.revision, entry.ops);
    }
    this.history.length = 0;
    this.compactedRevision = this.revisionValue;
    // Logs written before revocations were single entries can hold keys of a lease that is gone: such keys
    // would never expire. Delete them now, as the revocation would have.
    const orphans = [...this.kvs.values()].filter((kv) => kv.lease !== undefined && !this.leases.has(kv.lease));
    if (orphans.length > 0) this.apply(orphans.map((kv) => ({ type: 'delete', key: kv.key }) as Op));
  }
}
