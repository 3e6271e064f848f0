/**
 * A member's store of volume chunks and manifests: a BlobStore of its own (`<data>/volumes/chunks`, apart
 * from code blobs, whose garbage collection knows nothing of volumes), plus what the writer needs to capture
 * quickly: `putLocal` writes a chunk without waiting for the disk (the replica is paused meanwhile), and
 * `flush` makes everything written that way durable before the snapshot is offered to anyone.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BlobStore } from '../blobs.js';
import { CHUNK_BYTES } from './layout.js';

export const sha256Of = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/**
 * All-zero pieces, by length: a VM's disk image is mostly unwritten (sparse) blocks, and comparing a piece
 * with zeros costs a memcmp where hashing it costs a SHA-256 — a 1 GiB disk is captured in a fraction of
 * the time. Restores leave zero chunks as holes.
 */
const zeroShas = new Map<number, string>();
const ZEROES = Buffer.alloc(CHUNK_BYTES);

export function zeroChunkSha(length: number): string {
  let sha = zeroShas.get(length);
  if (!sha) {
    sha = sha256Of(Buffer.alloc(length));
    zeroShas.set(length, sha);
  }
  return sha;
}

/** Whether `bytes` (at most CHUNK_BYTES of them) are all zero. */
export function isZeroChunk(bytes: Uint8Array): boolean {
  return bytes.length <= CHUNK_BYTES && Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).equals(ZEROES.subarray(0, bytes.length));
}

/** The chunk's hash: of zeros known without hashing them. */
export const chunkSha = (bytes: Uint8Array): string => (isZeroChunk(bytes) ? zeroChunkSha(bytes.length) : sha256Of(bytes));

export class ChunkStore extends BlobStore {
  /** Written by putLocal, not yet fsynced. */
  private readonly unsynced = new Set<string>();

  constructor(private readonly root: string) {
    super(root);
  }

  /** Stores `bytes` (if new) without fsync; returns its hash. A chunk already held is touched (see collect). */
  putLocal(bytes: Uint8Array): string {
    const sha = chunkSha(bytes);
    if (this.has(sha)) {
      this.touch(sha);
      return sha;
    }
    const tmp = join(this.root, 'tmp', randomBytes(8).toString('hex'));
    writeFileSync(tmp, bytes, { mode: 0o600 });
    renameSync(tmp, this.path(sha));
    this.unsynced.add(sha);
    return sha;
  }

  /** Makes every chunk written by putLocal durable (file data, then the directory entry). */
  flush(): void {
    if (this.unsynced.size === 0) return;
    for (const sha of this.unsynced) {
      try {
        const fd = openSync(this.path(sha), 'r');
        try {
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      } catch (err) {
        // Removed meanwhile (collected as unreferenced): nothing left to make durable.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    const fd = openSync(this.root, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    this.unsynced.clear();
  }

  /** Marks a chunk as recently wanted, so collection leaves it alone for the grace period. */
  touch(sha: string): void {
    const now = new Date();
    try {
      utimesSync(this.path(sha), now, now);
    } catch {
      /* gone: the caller finds out when it reads it */
    }
  }

  /** The chunk's bytes, checked against its name: a damaged chunk reads as absent (and is removed). */
  readVerified(sha: string): Buffer | undefined {
    let bytes: Buffer;
    try {
      bytes = readFileSync(this.path(sha));
    } catch {
      return undefined;
    }
    if (sha256Of(bytes) === sha) return bytes;
    this.remove(sha);
    return undefined;
  }

  /**
   * Removes chunks no volume held here needs, once untouched for `graceMs`: a writer pushes a snapshot's
   * chunks before it commits the head that refers to them.
   */
  collect(keep: ReadonlySet<string>, graceMs: number): number {
    const before = Date.now() - graceMs;
    let removed = 0;
    for (const sha of this.list()) {
      if (keep.has(sha)) continue;
      try {
        if (statSync(this.path(sha)).mtimeMs > before) continue;
      } catch {
        continue;
      }
      this.remove(sha);
      this.unsynced.delete(sha);
      removed++;
    }
    return removed;
  }
}
