/**
 * One volume's writer against a real (embedded) registry, on a one-member quorum so no peer is needed: it
 * wins the writer record under its lease, commits signed heads of what its replica writes, and fences itself
 * — replica out, nothing more committed — as soon as the record is no longer its own (another member took
 * over after its lease expired) or its lease is gone; a new writer then restores the newest committed copy.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { keys } from '../../../protocol/keys.js';
import { verifyRecord } from '../../../protocol/records.js';
import type { Lease } from '../../../protocol/registry.js';
import { parseRecord } from '../../../protocol/schemas.js';
import { generateKeyPair } from '../../../protocol/signing.js';
import { ChunkStore } from '../../../quorum-agent/volume/chunks.js';
import { DEFAULT_VOLUME_LIMITS, decodeManifest, volumeHead } from '../../../quorum-agent/volume/layout.js';
import type { ChunkTransfer } from '../../../quorum-agent/volume/transfer.js';
import { Volume, type VolumeContext } from '../../../quorum-agent/volume/volume.js';
import { EmbeddedHost } from '../../../registry/embedded.js';
import { tempDir, waitFor } from '../../helpers/tmp.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setUp() {
  const dir = tempDir('allegra-vol-writer-');
  const host = await EmbeddedHost.start(join(dir.path, 'registry'));
  cleanups.push(dir.cleanup, () => host.close());
  const keyPair = generateKeyPair();
  const nodeId = 'n-self';
  let lease: Promise<Lease> | null = null;
  let changes = 0;
  const ctx: VolumeContext = {
    registry: host,
    log: pino({ level: 'silent' }),
    nodeId,
    keyPair,
    store: new ChunkStore(join(dir.path, 'chunks')),
    // A one-member quorum never pushes nor pulls: the transfer is not reached.
    transfer: {} as ChunkTransfer,
    limits: DEFAULT_VOLUME_LIMITS,
    intervalMs: 50,
    leaseTtlMs: 1_000,
    lease: () => {
      lease ??= host.grantLease(1_000);
      return lease;
    },
    members: () => [nodeId],
    nodeKey: (id) => (id === nodeId ? keyPair.publicKeyHex : undefined),
    pause: async () => null,
    drained: async () => true,
    ownerUid: () => undefined,
    changed: () => {
      changes++;
    },
  };
  const head = async () => {
    const kv = await host.get(keys.volumeHead('i-1'));
    return kv ? parseRecord(volumeHead, kv.value) : undefined;
  };
  const writerValue = async () => (await host.get(keys.volumeWriter('i-1')))?.value;
  const volume = (live: string) => {
    const v = new Volume(ctx, 'i-1', live);
    cleanups.push(() => v.close());
    return v;
  };
  return { dir: dir.path, host, ctx, head, writerValue, volume, changes: () => changes, lease: () => lease };
}

const writeByRename = (path: string, text: string) => {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
};

describe('a volume writer', () => {
  it('commits signed heads of what its replica writes, and fences itself once another member holds the record', async () => {
    const t = await setUp();
    const live = join(t.dir, 'live');
    const v = t.volume(live);
    v.update({ running: true, member: true, writer: undefined, head: null });
    await waitFor(() => v.ready(), { what: 'the writer to take over' });
    expect(JSON.parse((await t.writerValue()) ?? '{}').nodeId).toBe('n-self');
    expect(t.changes()).toBeGreaterThan(0);

    writeByRename(join(live, 'db.json'), '{"posts":[1]}');
    const first = await waitFor(
      async () => {
        const h = await t.head();
        return h && h.seq >= 1 ? h : undefined;
      },
      { what: 'a committed head' },
    );
    expect(verifyRecord(first, t.ctx.keyPair.publicKeyHex)).toBe(true);
    const manifest = decodeManifest(t.ctx.store.readVerified(first.manifest) as Buffer, 'i-1', DEFAULT_VOLUME_LIMITS);
    expect(manifest.entries.map((e) => e.path)).toEqual(['db.json']);

    // The lease expired and another member won the record: this writer must stop without being told.
    await t.host.delete(keys.volumeWriter('i-1'));
    await t.host.put(keys.volumeWriter('i-1'), JSON.stringify({ instanceId: 'i-1', nodeId: 'n-other', nonce: 'x', since: 0 }));
    // Fenced: out of writing at once (then a follower again, its replica drained).
    await waitFor(() => v.ready() === null && v.problem?.startsWith('fenced:'), { timeoutMs: 2_000, what: 'the writer fencing itself' });
    expect(v.role).not.toBe('writing');
    const seqAtFence = (await t.head())?.seq;
    writeByRename(join(live, 'db.json'), '{"posts":[1,2]}');
    await new Promise((r) => setTimeout(r, 400));
    expect((await t.head())?.seq).toBe(seqAtFence);
  });

  it('fences itself when its lease is gone, and the next writer restores the newest committed copy', async () => {
    const t = await setUp();
    const live = join(t.dir, 'live');
    const v = t.volume(live);
    v.update({ running: true, member: true, writer: undefined, head: null });
    await waitFor(() => v.ready(), { what: 'the writer to take over' });
    mkdirSync(join(live, 'sub'));
    writeByRename(join(live, 'sub', 'notes.txt'), 'committed');
    await waitFor(
      async () => {
        const h = await t.head();
        const bytes = h && t.ctx.store.readVerified(h.manifest);
        return bytes && decodeManifest(bytes, 'i-1', DEFAULT_VOLUME_LIMITS).entries.some((e) => e.path === 'sub/notes.txt');
      },
      { what: 'a committed head with the file' },
    );

    await (await t.lease())?.revoke();
    // Fenced: out of writing at once (then a follower again, its replica drained).
    await waitFor(() => v.ready() === null && v.problem?.startsWith('fenced:'), { timeoutMs: 2_000, what: 'the writer fencing itself' });
    expect(await t.writerValue()).toBeUndefined();

    // A new writer (a fresh volume object on another directory, as on another member) resumes from the head.
    const next = new Volume({ ...t.ctx, lease: () => t.host.grantLease(1_000) }, 'i-1', join(t.dir, 'live-next'));
    cleanups.push(() => next.close());
    const head = (await t.head()) ?? null;
    next.update({ running: true, member: true, writer: undefined, head });
    await waitFor(() => next.ready(), { what: 'the next writer to take over' });
    expect(readFileSync(join(t.dir, 'live-next', 'sub', 'notes.txt'), 'utf8')).toBe('committed');
  });
});
