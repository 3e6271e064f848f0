/**
 * The Registry contract: every backend must pass this suite unchanged.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compareAndSwap, createIfAbsent, type Registry, type WatchEvent } from '../../../protocol/registry.js';
import { sleep, waitFor } from '../../helpers/tmp.js';

export interface Backend {
  registry: Registry;
  /** A second, independent client of the same store (to see other writers' changes). */
  peer: Registry;
  cleanup(): Promise<void>;
}

export function registryContract(name: string, open: () => Promise<Backend>): void {
  describe(`Registry contract: ${name}`, () => {
    let b: Backend;
    beforeEach(async () => {
      b = await open();
    });
    afterEach(async () => {
      await b.cleanup();
    });

    it('puts, gets and lists by prefix in key order with revisions', async () => {
      const r1 = await b.registry.put('a/2', 'two');
      const r2 = await b.registry.put('a/1', 'one');
      await b.registry.put('b/1', 'other');
      expect(r2).toBeGreaterThan(r1);
      const got = await b.peer.get('a/2');
      expect(got).toMatchObject({ key: 'a/2', value: 'two', version: 1, modRevision: r1, createRevision: r1 });
      const list = await b.peer.list('a/');
      expect(list.items.map((kv) => kv.key)).toEqual(['a/1', 'a/2']);
      expect(list.revision).toBeGreaterThanOrEqual(r2);
      await b.registry.put('a/2', 'TWO');
      expect(await b.peer.get('a/2')).toMatchObject({ value: 'TWO', version: 2, createRevision: r1 });
      expect(await b.registry.delete('a/2')).toBe(true);
      expect(await b.registry.delete('a/2')).toBe(false);
      expect(await b.peer.get('a/2')).toBeUndefined();
    });

    it('compare-and-swap succeeds only against the expected revision', async () => {
      expect(await createIfAbsent(b.registry, 'k', 'v1')).toBe(true);
      expect(await createIfAbsent(b.peer, 'k', 'v2')).toBe(false);
      const kv = await b.registry.get('k');
      if (!kv) throw new Error('k missing');
      expect(await compareAndSwap(b.peer, 'k', kv.modRevision, 'v3')).toBe(true);
      // The first writer's view is now stale: its swap must lose.
      expect(await compareAndSwap(b.registry, 'k', kv.modRevision, 'v4')).toBe(false);
      expect((await b.registry.get('k'))?.value).toBe('v3');
    });

    it('applies multi-key transactions atomically, with a failure branch', async () => {
      await b.registry.put('t/a', '1');
      const ok = await b.registry.txn({
        compare: [{ key: 't/a', target: 'value', equals: '1' }],
        success: [
          { type: 'put', key: 't/b', value: '2' },
          { type: 'delete', key: 't/a' },
        ],
      });
      expect(ok.succeeded).toBe(true);
      const bad = await b.registry.txn({
        compare: [{ key: 't/a', target: 'value', equals: '1' }],
        success: [{ type: 'put', key: 't/c', value: 'no' }],
        failure: [{ type: 'put', key: 't/d', value: 'yes' }],
      });
      expect(bad.succeeded).toBe(false);
      expect((await b.peer.list('t/')).items.map((kv) => kv.key)).toEqual(['t/b', 't/d']);
      // Both keys written by one transaction share its revision.
      await b.registry.txn({
        compare: [],
        success: [
          { type: 'put', key: 't/x', value: '1' },
          { type: 'put', key: 't/y', value: '1' },
        ],
      });
      const [x, y] = [await b.peer.get('t/x'), await b.peer.get('t/y')];
      expect(x?.modRevision).toBe(y?.modRevision);
      await b.registry.txn({ compare: [], success: [{ type: 'deletePrefix', prefix: 't/' }] });
      expect((await b.peer.list('t/')).items).toEqual([]);
    });

    it('watches a prefix: puts and deletes from another client arrive in order, other prefixes do not', async () => {
      const seen: WatchEvent[] = [];
      const w = b.registry.watch('w/', (events) => seen.push(...events));
      await sleep(100); // let a remote watch connect
      await b.peer.put('w/1', 'a');
      await b.peer.put('x/1', 'ignored');
      await b.peer.put('w/1', 'b');
      await b.peer.delete('w/1');
      await waitFor(() => seen.length >= 3, { what: 'three watch events' });
      w.close();
      expect(seen.map((e) => [e.type, e.key, e.value])).toEqual([
        ['put', 'w/1', 'a'],
        ['put', 'w/1', 'b'],
        ['delete', 'w/1', undefined],
      ]);
      expect(seen[0]!.modRevision).toBeLessThan(seen[2]!.modRevision);
    });

    it('replays history when a watch starts from an earlier revision', async () => {
      const rev = await b.peer.put('h/1', 'first');
      await b.peer.put('h/2', 'second');
      const seen: WatchEvent[] = [];
      const w = b.registry.watch('h/', (events) => seen.push(...events), { fromRevision: rev });
      await waitFor(() => seen.length >= 2, { what: 'replayed events' });
      w.close();
      expect(seen.map((e) => e.key)).toEqual(['h/1', 'h/2']);
    });

    it('deletes keys attached to a lease when it expires, and keeps them while kept alive', async () => {
      const kept = await b.registry.grantLease(600);
      await b.registry.put('l/kept', 'x', { lease: kept.id });
      // A lease whose holder stops renewing: revoke handles stop renewal, so grant on the peer and close it.
      const doomed = await b.peer.grantLease(600);
      await b.peer.put('l/doomed', 'x', { lease: doomed.id });
      const deleted: string[] = [];
      const w = b.registry.watch('l/', (events) => deleted.push(...events.filter((e) => e.type === 'delete').map((e) => e.key)));
      await sleep(100);
      await b.peer.close();
      await waitFor(() => deleted.includes('l/doomed'), { timeoutMs: 3_000, what: 'lease expiry' });
      await sleep(700); // more than one TTL: the kept lease must survive through keep-alives
      expect(await b.registry.get('l/kept')).toBeDefined();
      await kept.revoke();
      await waitFor(async () => (await b.registry.get('l/kept')) === undefined, { what: 'revoked lease keys gone' });
      w.close();
    });

    it('refuses a put on an unknown lease', async () => {
      await expect(b.registry.put('l/x', 'x', { lease: 'deadbeefdeadbeef' })).rejects.toThrow(/lease/);
    });
  });
}
