/**
 * A volume snapshot round trip on real files: capture (chunks + manifest) then restore into another
 * directory gives the same tree; unchanged files are not read again; links and special files never travel;
 * a manifest from a peer is refused when its paths could escape the volume or disagree with its chunks; a
 * damaged chunk is never restored.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type CaptureIndex, capture, changedSince } from '../../../quorum-agent/volume/capture.js';
import { ChunkStore, zeroChunkSha } from '../../../quorum-agent/volume/chunks.js';
import { freeze, statState } from '../../../quorum-agent/volume/freeze.js';
import {
  CHUNK_BYTES,
  DEFAULT_VOLUME_LIMITS,
  decodeManifest,
  encodeManifest,
  MANIFEST_FORMAT,
} from '../../../quorum-agent/volume/layout.js';
import { MissingChunk, restore } from '../../../quorum-agent/volume/restore.js';
import { stageFiles } from '../../../quorum-agent/volume/stage.js';
import { tempDir } from '../../helpers/tmp.js';

const limits = DEFAULT_VOLUME_LIMITS;
const dirs: Array<{ cleanup: () => void }> = [];
const fresh = () => {
  const d = tempDir('allegra-vol-unit-');
  dirs.push(d);
  return d.path;
};
afterEach(() => {
  for (const d of dirs.splice(0)) d.cleanup();
});

describe('volume capture and restore', () => {
  it('restores exactly the captured tree, chunked and verified, and reads only what changed next time', async () => {
    const root = fresh();
    const live = join(root, 'live');
    mkdirSync(join(live, 'sub/deeper'), { recursive: true });
    const big = Buffer.alloc(CHUNK_BYTES * 2 + 17, 7);
    big.write('head', 0);
    writeFileSync(join(live, 'db.json'), '{"posts":[{"id":1}]}');
    writeFileSync(join(live, 'sub/deeper/big.bin'), big);
    writeFileSync(join(live, 'empty'), '');
    symlinkSync('/etc/passwd', join(live, 'escape'));
    const store = new ChunkStore(join(root, 'chunks'));

    const first = await capture(live, 'inst', new Map(), store, { limits });
    store.flush();
    expect(first.unstable).toBe(false);
    expect(first.skipped).toEqual(['escape (symbolic link)']);
    const big1 = first.manifest.entries.find((e) => e.path === 'sub/deeper/big.bin');
    expect(big1?.type === 'file' && big1.chunks.length).toBe(3);
    expect(first.readBytes).toBe(big.length + '{"posts":[{"id":1}]}'.length);

    // Same volume, same manifest (and hash); nothing read again.
    const again = await capture(live, 'inst', first.index, store, { limits });
    expect(again.readBytes).toBe(0);
    expect(encodeManifest(again.manifest).equals(encodeManifest(first.manifest))).toBe(true);
    expect(await changedSince(live, first.index, { limits })).toBe('none');

    // A rename over a file is a replacement; only that file is read.
    writeFileSync(join(live, 'db.json.tmp'), '{"posts":[{"id":1},{"id":2}]}');
    renameSync(join(live, 'db.json.tmp'), join(live, 'db.json'));
    expect(await changedSince(live, first.index, { limits })).toBe('replaced');
    const second = await capture(live, 'inst', first.index, store, { limits });
    expect(second.readBytes).toBe('{"posts":[{"id":1},{"id":2}]}'.length);

    // The manifest goes through the same checks a peer's would.
    const bytes = encodeManifest(second.manifest);
    const manifest = decodeManifest(bytes, 'inst', limits);
    const target = join(root, 'restored');
    const index: CaptureIndex = restore(manifest, store, target);
    expect(readFileSync(join(target, 'db.json'), 'utf8')).toBe('{"posts":[{"id":1},{"id":2}]}');
    expect(readFileSync(join(target, 'sub/deeper/big.bin')).equals(big)).toBe(true);
    expect(statSync(join(target, 'empty')).size).toBe(0);
    expect(() => statSync(join(target, 'escape'))).toThrow();
    // The restore's index lets the new writer's first capture skip every file.
    const afterRestore = await capture(target, 'inst', index, store, { limits });
    expect(afterRestore.readBytes).toBe(0);
  });

  it('captures a sparse disk image without hashing its holes and restores it as sparse, byte for byte', async () => {
    const root = fresh();
    const live = join(root, 'live');
    mkdirSync(live);
    // A 64 MiB "disk" with data in three places (a VM's image: mostly never written).
    const disk = join(live, 'disk.img');
    const fd = openSync(disk, 'w');
    for (const at of [0, 20 * CHUNK_BYTES + 5, 64 * 1024 * 1024 - 3]) writeSync(fd, Buffer.from('abc'), 0, 3, at);
    closeSync(fd);
    const store = new ChunkStore(join(root, 'chunks'));
    const cap = await capture(live, 'inst', new Map(), store, { limits });
    store.flush();
    const entry = cap.manifest.entries.find((e) => e.path === 'disk.img');
    expect(entry?.type === 'file' && entry.chunks.length).toBe(256);
    // The zero chunks are one chunk, named by the hash of 256 KiB of zeros.
    const zero = createHash('sha256').update(Buffer.alloc(CHUNK_BYTES)).digest('hex');
    expect(zeroChunkSha(CHUNK_BYTES)).toBe(zero);
    expect(entry?.type === 'file' && entry.chunks.filter((c) => c === zero).length).toBe(253);
    expect(store.list().length).toBe(4);
    // Staged (a VM's disk): copied while paused, stamped as live; read from the copy with holes skipped, the
    // same manifest — and the stamps say the live file is unchanged since.
    const stage = join(root, 'stage');
    const stamps = await stageFiles(live, stage);
    expect([...stamps.keys()]).toEqual(['disk.img']);
    expect(statSync(join(stage, 'disk.img')).blocks).toBeLessThan(statSync(disk).blocks + 8);
    const staged = await capture(stage, 'inst', new Map(), store, { limits, holes: true });
    expect(encodeManifest(staged.manifest).equals(encodeManifest(cap.manifest))).toBe(true);
    expect(staged.readBytes).toBeLessThan(4 * CHUNK_BYTES);
    const target = join(root, 'restored');
    restore(decodeManifest(encodeManifest(cap.manifest), 'inst', limits), store, target);
    const restored = join(target, 'disk.img');
    expect(readFileSync(restored).equals(readFileSync(disk))).toBe(true);
    // Holes stay holes: three written 4 KiB blocks' worth of chunks, not 64 MiB.
    expect(statSync(restored).size).toBe(64 * 1024 * 1024);
    expect(statSync(restored).blocks * 512).toBeLessThan(4 * CHUNK_BYTES);
  });

  it('sees an in-place change (a database page) as one that needs the replica paused', async () => {
    const live = join(fresh(), 'live');
    mkdirSync(live);
    writeFileSync(join(live, 'app.sqlite'), Buffer.alloc(8192, 1));
    const store = new ChunkStore(join(live, '..', 'chunks'));
    const cap = await capture(live, 'inst', new Map(), store, { limits });
    const fd = openSync(join(live, 'app.sqlite'), 'r+');
    writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, 4096);
    closeSync(fd);
    expect(await changedSince(live, cap.index, { limits })).toBe('in-place');
  });

  it('refuses manifests whose paths leave the volume, lack their directory or disagree with their chunks', () => {
    const sha = 'a'.repeat(64);
    const m = (entries: unknown[], instanceId = 'inst') => Buffer.from(JSON.stringify({ format: MANIFEST_FORMAT, instanceId, entries }));
    const file = (path: string, size = 1, chunks = [sha]) => ({ type: 'file', path, mode: 0o644, size, chunks });
    expect(() => decodeManifest(m([file('../outside')]), 'inst', limits)).toThrow(/relative and normalized/);
    expect(() => decodeManifest(m([file('/etc/passwd')]), 'inst', limits)).toThrow(/relative and normalized/);
    expect(() => decodeManifest(m([file('a/./b')]), 'inst', limits)).toThrow(/relative and normalized/);
    expect(() => decodeManifest(m([file('dir/x')]), 'inst', limits)).toThrow(/directory is not listed/);
    expect(() => decodeManifest(m([file('x', CHUNK_BYTES + 1)]), 'inst', limits)).toThrow(/size and chunks disagree/);
    expect(() => decodeManifest(m([file('x'), file('x')]), 'inst', limits)).toThrow(/twice/);
    expect(() => decodeManifest(m([file('x')], 'other'), 'inst', limits)).toThrow(/of instance other/);
    expect(() => decodeManifest(m([file('x', 10, [sha])]), 'inst', { ...limits, maxBytes: 5 })).toThrow(/more than 5 bytes/);
    expect(decodeManifest(m([{ type: 'dir', path: 'd', mode: 0o755 }, file('d/x')]), 'inst', limits).entries).toHaveLength(2);
  });

  it('never restores a damaged chunk, and leaves the live directory as it was', async () => {
    const root = fresh();
    const live = join(root, 'live');
    mkdirSync(live);
    writeFileSync(join(live, 'db.json'), 'original');
    const store = new ChunkStore(join(root, 'chunks'));
    const cap = await capture(live, 'inst', new Map(), store, { limits });
    const entry = cap.manifest.entries[0];
    if (entry?.type !== 'file') throw new Error('expected a file entry');
    writeFileSync(store.path(entry.chunks[0] as string), 'tampered');
    const target = join(root, 'target');
    mkdirSync(target);
    writeFileSync(join(target, 'kept'), 'x');
    expect(() => restore(cap.manifest, store, target)).toThrow(MissingChunk);
    expect(readFileSync(join(target, 'kept'), 'utf8')).toBe('x');
    expect(store.has(entry.chunks[0] as string)).toBe(false);
  });
});

describe('freeze', () => {
  it('stops every thread of the listed processes and resumes them', async () => {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 5)'], { stdio: 'ignore' });
    try {
      await new Promise((r) => child.once('spawn', r));
      const pid = child.pid as number;
      const thaw = await freeze(() => [pid]);
      expect(statState(readFileSync(`/proc/${pid}/stat`, 'utf8'))).toMatch(/[Tt]/);
      thaw();
      const deadline = Date.now() + 2_000;
      while (/[Tt]/.test(statState(readFileSync(`/proc/${pid}/stat`, 'utf8'))) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 10));
      expect(statState(readFileSync(`/proc/${pid}/stat`, 'utf8'))).not.toMatch(/[Tt]/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
