/**
 * The cluster-state contract. Two backends implement it (embedded, etcd); everything else talks only to
 * this interface. The semantics follow etcd's v3 API closely so that both backends can honour it exactly:
 * a single global revision that grows with every committed change, per-key create/mod revisions and
 * versions, multi-key transactions with compare guards, prefix watches that can resume from a revision,
 * and leases that delete their keys when they expire.
 */

export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the change that created the key (reset when the key is deleted and re-created). */
  createRevision: number;
  /** Revision of the last change to the key. */
  modRevision: number;
  /** Number of changes since creation (1 after the first put). */
  version: number;
  /** Lease the key is attached to, if any. */
  lease?: string;
}

export type Compare =
  | { key: string; target: 'modRevision'; equals: number }
  | { key: string; target: 'version'; equals: number } // version 0 means "absent"
  | { key: string; target: 'value'; equals: string };

export type Op =
  | { type: 'put'; key: string; value: string; lease?: string }
  | { type: 'delete'; key: string }
  | { type: 'deletePrefix'; prefix: string };

export interface TxnRequest {
  compare: Compare[];
  success: Op[];
  failure?: Op[];
}

export interface TxnResult {
  succeeded: boolean;
  /** Store revision after the transaction (unchanged if nothing was written). */
  revision: number;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  key: string;
  /** Present on put. */
  value?: string;
  modRevision: number;
}

export interface RangeResult {
  items: KeyValue[];
  /** Store revision the listing reflects; watch from `revision + 1` to see every later change. */
  revision: number;
}

export interface WatchOptions {
  /** Deliver events with modRevision >= fromRevision. Default: only changes after the watch starts. */
  fromRevision?: number;
  /**
   * Called when the backend cannot replay history from `fromRevision` (compacted): the consumer must
   * re-list the prefix and continue from the returned revision. Watchers built with `Mirror` handle this.
   */
  onCompacted?: (currentRevision: number) => void;
  /**
   * Called once if the registry refuses the watch for good (no read permission on the prefix, or no valid
   * credential); the watch then ends. Transient failures are retried and never reported here.
   */
  onError?: (err: Error) => void;
}

export interface Watch {
  close(): void;
}

export interface Lease {
  readonly id: string;
  readonly ttlMs: number;
  /** Stops the automatic keep-alive and deletes every key attached to the lease. */
  revoke(): Promise<void>;
  /** Registers a callback for when the lease is lost (expired before a keep-alive got through). */
  onLost(listener: () => void): void;
}

export interface Registry {
  get(key: string): Promise<KeyValue | undefined>;
  /** Every key under `prefix`, sorted by key. */
  list(prefix: string): Promise<RangeResult>;
  put(key: string, value: string, opts?: { lease?: string }): Promise<number>;
  /** Returns whether the key existed. */
  delete(key: string): Promise<boolean>;
  txn(request: TxnRequest): Promise<TxnResult>;
  /** Events are delivered in revision order, in batches, on the prefix. */
  watch(prefix: string, onEvents: (events: WatchEvent[]) => void, opts?: WatchOptions): Watch;
  /** Grants a lease and keeps it alive in the background until revoked or the registry is closed. */
  grantLease(ttlMs: number): Promise<Lease>;
  close(): Promise<void>;
}

/** Compare-and-swap helpers built on `txn`, shared by every caller. */
export async function createIfAbsent(registry: Registry, key: string, value: string, lease?: string): Promise<boolean> {
  const op: Op = lease ? { type: 'put', key, value, lease } : { type: 'put', key, value };
  const res = await registry.txn({ compare: [{ key, target: 'version', equals: 0 }], success: [op] });
  return res.succeeded;
}

export async function compareAndSwap(registry: Registry, key: string, modRevision: number, value: string | null): Promise<boolean> {
  const op: Op = value === null ? { type: 'delete', key } : { type: 'put', key, value };
  const res = await registry.txn({ compare: [{ key, target: 'modRevision', equals: modRevision }], success: [op] });
  return res.succeeded;
}
