/**
 * Materializes a committed snapshot as the new writer's live volume directory. Everything is written into a
 * fresh sibling directory (nothing of tenant code exists there yet, so no link can redirect a write), every
 * chunk is checked against its hash as it is read, and the directory replaces the old live one in one
 * rename. Returns the capture index of what it wrote, so the first capture does not read it all again.
 */
import { chmodSync, closeSync, ftruncateSync, lstatSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { CaptureIndex } from './capture.js';
import { type ChunkStore, zeroChunkSha } from './chunks.js';
import type { Manifest } from './layout.js';
import { CHUNK_BYTES } from './layout.js';

export class MissingChunk extends Error {}

export function restore(manifest: Manifest, store: ChunkStore, liveDir: string): CaptureIndex {
  const staging = `${liveDir}.restore`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true, mode: 0o755 });
  const index: CaptureIndex = new Map();
  try {
    // Parents before children: the manifest is sorted by path, and "a" sorts before "a/b".
    const entries = [...manifest.entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    for (const e of entries) {
      const abs = join(staging, e.path);
      if (e.type === 'dir') {
        mkdirSync(abs, { mode: 0o700 });
        continue;
      }
      const fd = openSync(abs, 'wx', 0o600);
      try {
        // Full chunks of zeros stay holes (a VM's disk is mostly unwritten): the file is as sparse as it was.
        const zero = zeroChunkSha(CHUNK_BYTES);
        let offset = 0;
        for (const sha of e.chunks) {
          if (sha === zero && store.has(sha)) {
            offset += CHUNK_BYTES;
            continue;
          }
          const bytes = store.readVerified(sha);
          if (!bytes) throw new MissingChunk(`chunk ${sha.slice(0, 12)}… of ${e.path} is not held here`);
          writeSync(fd, bytes, 0, bytes.length, offset);
          offset += bytes.length;
        }
        ftruncateSync(fd, offset);
      } finally {
        closeSync(fd);
      }
      chmodSync(abs, e.mode);
      const st = lstatSync(abs, { bigint: true });
      index.set(e.path, { stamp: `${st.ino}:${st.size}:${st.mtimeNs}`, chunks: e.chunks, size: e.size, mode: e.mode });
    }
    // Directory modes last: a read-only directory would have refused its own entries.
    for (const e of entries) {
      if (e.type !== 'dir') continue;
      chmodSync(join(staging, e.path), e.mode);
      index.set(e.path, { stamp: '', chunks: [], size: 0, mode: e.mode });
    }
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw err;
  }
  rmSync(liveDir, { recursive: true, force: true });
  renameSync(staging, liveDir);
  return index;
}
