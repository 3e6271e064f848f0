/**
 * Recovery of the embedded registry's log: torn tails at every byte offset, logs damaged by the old recovery
 * (a torn line with acknowledged entries appended behind it), crashes in the middle of a compaction, and
 * revocations interrupted half-way. Each case restarts the store the way the hosting process does.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openDurableStore } from '../../../registry/embedded.js';
import { readWal, WalCorruptedError } from '../../../registry/journal.js';
import type { Store } from '../../../registry/store.js';
import { tempDir } from '../../helpers/tmp.js';

interface Acked {
  value: string;
  revision: number;
}

/** Opens the store of `dir` as the host does, runs `fn`, closes the journal. */
function withStore<T>(dir: string, fn: (store: Store) => T): T {
  const { store, journal } = openDurableStore(dir);
  try {
    return fn(store);
  } finally {
    journal.close();
  }
}

function put(store: Store, acked: Map<string, Acked>, key: string, value: string): number {
  const { revision } = store.txn({ compare: [], success: [{ type: 'put', key, value }] });
  acked.set(key, { value, revision });
  return revision;
}

/** Every acknowledged write is there with its value and revision, and nothing else under `k/`. */
function expectExactly(store: Store, acked: Map<string, Acked>): void {
  const seen = Object.fromEntries(store.range('k/').items.map((kv) => [kv.key, { value: kv.value, revision: kv.modRevision }]));
  expect(seen).toEqual(Object.fromEntries(acked));
}

const WAL = 'wal.jsonl';

describe('registry log recovery', () => {
  it('tears the last entry at every byte offset: two restarts with writes in between keep every acknowledged write', () => {
    const base = tempDir('allegra-wal-base-');
    const dir = tempDir('allegra-wal-');
    try {
      const acked = new Map<string, Acked>();
      let lineStart = 0;
      withStore(base.path, (store) => {
        const lease = store.grantLease(60_000);
        put(store, acked, 'k/a', 'alpha');
        store.txn({ compare: [], success: [{ type: 'put', key: 'k/b', value: 'beta', lease: lease.id }] });
        acked.set('k/b', { value: 'beta', revision: store.revision });
        put(store, acked, 'k/c', 'gamma "quoted" {"kind":"txn"}');
        lineStart = statSync(join(base.path, WAL)).size;
        // The entry that will be torn: a multi-key transaction, never acknowledged in the cases below.
        store.txn({
          compare: [],
          success: [
            { type: 'put', key: 'k/torn', value: 'x'.repeat(40) },
            { type: 'delete', key: 'k/a' },
          ],
        });
      });
      const full = readFileSync(join(base.path, WAL));
      const entryBytes = full.length - lineStart;
      expect(entryBytes).toBeGreaterThan(60);
      const tornCases: Array<{ name: string; bytes: (k: number) => Buffer }> = [
        { name: 'cut', bytes: (k) => full.subarray(0, lineStart + k) },
        // A crash can also leave the file extended with zeros where the data never reached the disk.
        { name: 'zero-filled', bytes: (k) => Buffer.concat([full.subarray(0, lineStart + k), Buffer.alloc(entryBytes - k)]) },
      ];
      let checked = 0;
      for (const tear of tornCases) {
        for (let k = 0; k < entryBytes; k++) {
          const expected = new Map(acked);
          writeFileSync(join(dir.path, WAL), tear.bytes(k));
          let highest = Math.max(...[...expected.values()].map((a) => a.revision));
          withStore(dir.path, (store) => {
            expectExactly(store, expected);
            expect(store.revision).toBe(highest);
            const r = put(store, expected, 'k/after1', `one-${k}`);
            expect(r).toBeGreaterThan(highest);
            highest = put(store, expected, 'k/after2', `two-${k}`);
          });
          // The second restart is where the old recovery lost everything written after the first.
          withStore(dir.path, (store) => {
            expectExactly(store, expected);
            expect(store.revision).toBe(highest);
            expect(put(store, expected, 'k/after3', 'three')).toBe(highest + 1);
          });
          withStore(dir.path, (store) => expectExactly(store, expected));
          // The log holds only whole entries again.
          const wal = readWal(join(dir.path, WAL));
          expect(wal.validBytes).toBe(wal.fileBytes);
          checked++;
        }
      }
      expect(checked).toBe(2 * entryBytes);
    } finally {
      base.cleanup();
      dir.cleanup();
    }
  });

  it('salvages acknowledged entries that the old recovery appended behind a torn line', () => {
    const dir = tempDir('allegra-wal-legacy-');
    try {
      const line = (revision: number, key: string, value: string) =>
        JSON.stringify({ kind: 'txn', revision, ops: [{ t: 'p', k: key, v: value }] });
      const torn = line(2, 'k/torn', 'never acknowledged').slice(0, 25);
      const brokenStart = line(3, 'k/after', 'acked').slice(0, 4);
      writeFileSync(
        join(dir.path, WAL),
        [line(1, 'k/first', 'acked'), `${torn}${line(2, 'k/second', 'acked')}`, `${brokenStart}${line(3, 'k/third', 'acked')}`, ''].join(
          '\n',
        ),
      );
      withStore(dir.path, (store) => {
        expect(store.range('k/').items.map((kv) => [kv.key, kv.modRevision])).toEqual([
          ['k/first', 1],
          ['k/second', 2],
          ['k/third', 3],
        ]);
        expect(store.txn({ compare: [], success: [{ type: 'put', key: 'k/next', value: 'v' }] }).revision).toBe(4);
      });
    } finally {
      dir.cleanup();
    }
  });

  it('refuses to start on damage in the middle of the log instead of dropping the entries after it', () => {
    const dir = tempDir('allegra-wal-corrupt-');
    try {
      withStore(dir.path, (store) => {
        for (let i = 0; i < 3; i++) store.txn({ compare: [], success: [{ type: 'put', key: `k/${i}`, value: 'v' }] });
      });
      const wal = readFileSync(join(dir.path, WAL), 'utf8').split('\n');
      wal[1] = `${wal[1]?.slice(0, 10)}#garbage#${wal[1]?.slice(20)}`;
      writeFileSync(join(dir.path, WAL), wal.join('\n'));
      expect(() => openDurableStore(dir.path)).toThrow(WalCorruptedError);
      expect(() => openDurableStore(dir.path)).toThrow(/corrupted at byte \d+/);
    } finally {
      dir.cleanup();
    }
  });

  it('a crash between writing the snapshot and emptying the log replays nothing twice', () => {
    const dir = tempDir('allegra-wal-compact-');
    try {
      const acked = new Map<string, Acked>();
      let logBeforeCompaction = Buffer.alloc(0);
      let revokedLease = '';
      let liveLease = '';
      withStore(dir.path, (store) => {
        const doomed = store.grantLease(60_000);
        revokedLease = doomed.id;
        store.txn({ compare: [], success: [{ type: 'put', key: 'l/doomed', value: 'x', lease: doomed.id }] });
        liveLease = store.grantLease(60_000).id;
        put(store, acked, 'k/a', '1');
        store.revokeLease(doomed.id);
        put(store, acked, 'k/b', '2');
      });
      const { store, journal } = openDurableStore(dir.path);
      logBeforeCompaction = readFileSync(join(dir.path, WAL));
      journal.compact(store.snapshot());
      journal.close();
      // The crash: the snapshot is in place but the old log is still there.
      writeFileSync(join(dir.path, WAL), logBeforeCompaction);
      withStore(dir.path, (again) => {
        expectExactly(again, acked);
        expect(again.hasLease(revokedLease)).toBe(false);
        expect(again.hasLease(liveLease)).toBe(true);
        expect(again.get('l/doomed')).toBeUndefined();
        const highest = Math.max(...[...acked.values()].map((a) => a.revision));
        expect(put(again, acked, 'k/c', '3')).toBe(highest + 1);
      });
      withStore(dir.path, (again) => expectExactly(again, acked));
    } finally {
      dir.cleanup();
    }
  });

  it('a revocation is one entry: a log cut behind it keeps neither the lease nor its keys', () => {
    const dir = tempDir('allegra-wal-revoke-');
    try {
      let lease = '';
      withStore(dir.path, (store) => {
        lease = store.grantLease(60_000).id;
        store.txn({ compare: [], success: [{ type: 'put', key: 'n/1', value: 'x', lease }] });
        store.revokeLease(lease);
      });
      const lines = readFileSync(join(dir.path, WAL), 'utf8').trim().split('\n');
      expect(lines).toHaveLength(3);
      expect(JSON.parse(lines[2] as string)).toMatchObject({ kind: 'revoke', id: lease, ops: [{ t: 'd', k: 'n/1' }] });
      // Logs of the old format wrote the revocation and the deletion separately; a crash between them left
      // keys of a dead lease that never expired. Recovery deletes such keys.
      const copy = tempDir('allegra-wal-revoke-old-');
      try {
        writeFileSync(join(copy.path, WAL), `${lines[0]}\n${lines[1]}\n${JSON.stringify({ kind: 'revoke', id: lease })}\n`);
        withStore(copy.path, (store) => {
          expect(store.get('n/1')).toBeUndefined();
          expect(store.revision).toBe(2);
        });
      } finally {
        copy.cleanup();
      }
    } finally {
      dir.cleanup();
    }
  });
});
