/**
 * Commits an instance's state writes through the registry's consensus (etcd's Raft; the embedded store's
 * fsynced log), in batches: writes that arrive while a commit is in flight go together into the next
 * transaction (group commit), one per key per batch. A transaction is guarded by the meta record's revision
 * as this member's copy knows it: if it succeeds, nothing was committed in between, so the conditions
 * (If-Match, If-None-Match) and the quota were checked against exactly the committed state. If another
 * writer got in first, the copy catches up and the batch is tried again. A write is answered only once its
 * transaction is committed.
 */
import type { Op, Registry } from '../../protocol/registry.js';
import { type StateCopy, StateUnavailable } from './copy.js';
import { entryBytes, nextChecksum, type StateMeta, stateKeys } from './layout.js';

export interface Quota {
  maxBytes: number;
  maxKeys: number;
}

export type Condition = { ifMatch?: number; ifNoneMatch?: boolean };

export type WriteResult = { ok: true; revision: number } | { ok: false; reason: 'precondition' | 'quota' | 'absent'; message: string };

interface Pending {
  key: string;
  /** New value (base64), or undefined to delete. */
  value: string | undefined;
  cond: Condition;
  resolve: (r: WriteResult) => void;
  reject: (err: Error) => void;
}

const MAX_BATCH = 64;
const MAX_ATTEMPTS = 20;

export class StateWriter {
  private queue: Pending[] = [];
  private flushing = false;

  constructor(
    private readonly registry: Registry,
    private readonly copy: StateCopy,
    private readonly quota: Quota,
  ) {}

  write(key: string, value: string | undefined, cond: Condition = {}): Promise<WriteResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ key, value, cond, resolve, reject });
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const batch: Pending[] = [];
        const keys = new Set<string>();
        const rest: Pending[] = [];
        for (const p of this.queue) {
          if (batch.length < MAX_BATCH && !keys.has(p.key)) {
            keys.add(p.key);
            batch.push(p);
          } else rest.push(p);
        }
        this.queue = rest;
        await this.commit(batch);
      }
    } finally {
      this.flushing = false;
    }
  }

  /** What a write would do to the state the copy holds: refused, or its effect on the meta record. */
  private evaluate(p: Pending, meta: StateMeta): WriteResult | { next: StateMeta } {
    const current = this.copy.entries.get(p.key);
    if (p.cond.ifNoneMatch && current)
      return { ok: false, reason: 'precondition', message: `key exists (revision ${current.modRevision})` };
    if (p.cond.ifMatch !== undefined && (current?.modRevision ?? 0) !== p.cond.ifMatch)
      return { ok: false, reason: 'precondition', message: `key is at revision ${current?.modRevision ?? 'none'}, not ${p.cond.ifMatch}` };
    if (p.value === undefined && !current) return { ok: false, reason: 'absent', message: 'no such key' };
    const bytes = meta.bytes - (current ? entryBytes(p.key, current.value) : 0) + (p.value !== undefined ? entryBytes(p.key, p.value) : 0);
    const count = meta.keys + (current ? 0 : 1) - (p.value === undefined ? 1 : 0);
    if (p.value !== undefined && (bytes > this.quota.maxBytes || count > this.quota.maxKeys))
      return {
        ok: false,
        reason: 'quota',
        message: `the instance's state quota is ${this.quota.maxBytes} bytes and ${this.quota.maxKeys} keys (this write would make ${bytes} bytes, ${count} keys)`,
      };
    return { next: { checksum: nextChecksum(meta.checksum, p.key, current?.value, p.value), bytes, keys: count } };
  }

  private async commit(batch: Pending[]): Promise<void> {
    let todo = batch;
    for (let attempt = 0; todo.length > 0; attempt++) {
      if (attempt >= MAX_ATTEMPTS) {
        for (const p of todo) p.reject(new StateUnavailable('too many concurrent writers; try again'));
        return;
      }
      const guard = this.copy.metaRevision;
      let meta = this.copy.meta;
      const ops: Op[] = [];
      const accepted: Pending[] = [];
      const refused: Array<[Pending, WriteResult]> = [];
      for (const p of todo) {
        const r = this.evaluate(p, meta);
        if ('next' in r) {
          meta = r.next;
          accepted.push(p);
          ops.push(
            p.value === undefined
              ? { type: 'delete', key: stateKeys.value(this.copy.instanceId, p.key) }
              : { type: 'put', key: stateKeys.value(this.copy.instanceId, p.key), value: p.value },
          );
        } else refused.push([p, r]);
      }
      if (accepted.length > 0) ops.push({ type: 'put', key: stateKeys.meta(this.copy.instanceId), value: JSON.stringify(meta) });
      let res: { succeeded: boolean; revision: number };
      try {
        res = await this.registry.txn({
          compare: [
            guard === 0
              ? { key: stateKeys.meta(this.copy.instanceId), target: 'version', equals: 0 }
              : { key: stateKeys.meta(this.copy.instanceId), target: 'modRevision', equals: guard },
          ],
          success: ops,
        });
      } catch (err) {
        // Not committed, or not known to be: never answer success for a write that may be lost.
        const e = new StateUnavailable(`no majority of the registry could commit the write (${(err as Error).message})`);
        for (const p of todo) p.reject(e);
        return;
      }
      if (res.succeeded) {
        // The guard held: the refusals were judged against the committed state too.
        for (const p of accepted) p.resolve({ ok: true, revision: res.revision });
        for (const [p, r] of refused) p.resolve(r);
        // The next batch is judged against this one's result: let the copy apply it first (a watch event
        // away), rather than fail the next guard and pay a round trip to find out.
        if (accepted.length > 0) await this.copy.waitFor(res.revision, 2_000).catch(() => {});
        return;
      }
      // Someone else committed first: catch up with the registry and judge everything again.
      try {
        await this.copy.current();
      } catch (err) {
        for (const p of todo) p.reject(err as Error);
        return;
      }
      todo = [...accepted, ...refused.map(([p]) => p)];
    }
  }
}
