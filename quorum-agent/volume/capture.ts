/**
 * Turns the writer's live volume directory into a manifest and chunks. The directory belongs to tenant code
 * and is read by the agent, so nothing in it is trusted: links are never followed (symbolic links, sockets,
 * FIFOs and devices are left out and named), every file is opened with O_NOFOLLOW and checked on its open
 * descriptor (a regular file, owned by the instance's uid when it runs sandboxed — so a link or a swapped
 * directory can never make the agent copy someone else's file), and entries, bytes and depth are bounded.
 *
 * Unchanged files (same inode, size and modification time as last time) keep their chunks without being
 * read. A file that changes while it is read (possible only when the replica could not be paused) makes the
 * capture `unstable`: the caller tries again rather than commit a torn file.
 */
import { constants, type Dirent, type Stats } from 'node:fs';
import { lstat, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChunkStore } from './chunks.js';
import { dataExtents, overlaps } from './extents.js';
import { CHUNK_BYTES, MANIFEST_FORMAT, type Manifest, type ManifestEntry, type VolumeLimits } from './layout.js';

const ZERO_CHUNK = Buffer.alloc(CHUNK_BYTES);

type BigStats = Awaited<ReturnType<typeof lstat>> & { ino: bigint; size: bigint; mtimeNs: bigint; uid: bigint; mode: bigint };

/** What identifies a file version without reading it. */
export function stampOf(st: { ino: bigint; size: bigint; mtimeNs: bigint }): string {
  return `${st.ino}:${st.size}:${st.mtimeNs}`;
}

/** Per path: the stamp of the file as last captured and its chunks. */
export type CaptureIndex = Map<string, { stamp: string; chunks: string[]; size: number; mode: number }>;

export interface CaptureOptions {
  limits: VolumeLimits;
  /**
   * The instance's uid when its replica runs sandboxed: only its files and directories are captured (and the
   * agent's own: what a restore wrote before the replica's first start; tenant code cannot create those).
   */
  ownerUid?: number;
  /**
   * Ask the file system where each file holds data and read only that (extents.ts): for files only the agent
   * writes (a staged copy of a VM's disk), whose holes would otherwise be read as zeros.
   */
  holes?: boolean;
}

const AGENT_UID = process.getuid?.() ?? -1;

function owned(uid: bigint | number, opts: CaptureOptions): boolean {
  return opts.ownerUid === undefined || Number(uid) === opts.ownerUid || Number(uid) === AGENT_UID;
}

export interface Capture {
  manifest: Manifest;
  index: CaptureIndex;
  bytes: number;
  /** Bytes read (of files that changed since the last capture; holes skipped are not read). */
  readBytes: number;
  /** Entries left out, with why (links, special files, other owners). */
  skipped: string[];
  /** A file changed while it was read: do not commit this capture. */
  unstable: boolean;
}

export class VolumeTooLarge extends Error {}

const MAX_DEPTH = 32;

interface Walked {
  rel: string;
  abs: string;
  st: BigStats;
}

/** Every entry under `root` (lstat, never following links), bounded; `skipped` collects what is left out. */
async function walk(root: string, opts: CaptureOptions, skipped: string[]): Promise<Walked[]> {
  const out: Walked[] = [];
  const stack: Array<{ rel: string; depth: number }> = [{ rel: '', depth: 0 }];
  while (stack.length > 0) {
    const { rel, depth } = stack.pop() as { rel: string; depth: number };
    let names: Dirent[];
    try {
      names = await readdir(join(root, rel), { withFileTypes: true });
    } catch {
      continue; // removed meanwhile
    }
    for (const d of names) {
      const childRel = rel ? `${rel}/${d.name}` : d.name;
      const abs = join(root, childRel);
      let st: BigStats;
      try {
        st = (await lstat(abs, { bigint: true })) as BigStats;
      } catch {
        continue;
      }
      if (!owned(st.uid, opts)) {
        skipped.push(`${childRel} (not the instance's)`);
        continue;
      }
      if (st.isDirectory()) {
        if (depth + 1 >= MAX_DEPTH) {
          skipped.push(`${childRel} (deeper than ${MAX_DEPTH} levels)`);
          continue;
        }
        stack.push({ rel: childRel, depth: depth + 1 });
      } else if (!st.isFile()) {
        skipped.push(`${childRel} (${st.isSymbolicLink() ? 'symbolic link' : 'not a regular file'})`);
        continue;
      }
      out.push({ rel: childRel, abs, st });
      if (out.length > opts.limits.maxEntries)
        throw new VolumeTooLarge(`the volume holds more than ${opts.limits.maxEntries} files and directories`);
    }
  }
  return out;
}

/**
 * What changed under `root` since `index` (cheap: lstat only). `in-place`: an existing file (same inode) got
 * new content — what databases do, and the one kind of change whose files must be read at one instant
 * (SQLite's database with its journal); `replaced`: only new, renamed-over or removed entries, each of which
 * is whole once it is in place.
 */
export async function changedSince(root: string, index: CaptureIndex, opts: CaptureOptions): Promise<'none' | 'replaced' | 'in-place'> {
  let walked: Walked[];
  try {
    walked = await walk(root, opts, []);
  } catch (err) {
    if (err instanceof VolumeTooLarge) return 'replaced'; // let capture report it
    throw err;
  }
  let change: 'none' | 'replaced' = walked.length !== index.size ? 'replaced' : 'none';
  for (const w of walked) {
    const known = index.get(w.rel);
    if (!known) {
      change = 'replaced';
      continue;
    }
    const mode = Number(w.st.mode) & 0o7777;
    if (known.mode !== mode) change = 'replaced';
    if (!w.st.isFile() || known.stamp === stampOf(w.st)) continue;
    if (known.stamp.startsWith(`${w.st.ino}:`)) return 'in-place';
    change = 'replaced';
  }
  return change;
}

/** Reads one file through a descriptor opened without following links; undefined if it is not acceptable. */
async function readFile(
  w: Walked,
  store: ChunkStore,
  opts: CaptureOptions,
  skipped: string[],
): Promise<{ chunks: string[]; size: number; read: number; stamp: string; stable: boolean } | undefined> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(w.abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    skipped.push(`${w.rel} (could not be opened)`);
    return undefined;
  }
  try {
    const before = (await fh.stat({ bigint: true })) as unknown as BigStats;
    if (!(before as unknown as Stats).isFile() || !owned(before.uid, opts)) {
      skipped.push(`${w.rel} (replaced while read)`);
      return undefined;
    }
    const chunks: string[] = [];
    const buf = Buffer.allocUnsafe(CHUNK_BYTES);
    const extents = opts.holes ? await dataExtents(w.abs) : undefined;
    // Stored (and its hash known) once per file, not once per hole chunk: a 1 GiB image has thousands.
    const zero = extents ? store.putLocal(ZERO_CHUNK) : undefined;
    const length = Number(before.size);
    let size = 0;
    let read = 0;
    for (;;) {
      // A whole chunk inside a hole is zeros: named without being read.
      if (extents && size + CHUNK_BYTES <= length && !overlaps(extents, size, size + CHUNK_BYTES)) {
        chunks.push(zero as string);
        size += CHUNK_BYTES;
        if (size > opts.limits.maxBytes) throw new VolumeTooLarge(`the volume holds more than ${opts.limits.maxBytes} bytes`);
        continue;
      }
      let filled = 0;
      while (filled < CHUNK_BYTES) {
        const { bytesRead } = await fh.read(buf, filled, CHUNK_BYTES - filled, size + filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      if (filled === 0) break;
      read += filled;
      chunks.push(store.putLocal(buf.subarray(0, filled)));
      size += filled;
      if (size > opts.limits.maxBytes) throw new VolumeTooLarge(`the volume holds more than ${opts.limits.maxBytes} bytes`);
      if (filled < CHUNK_BYTES) break;
    }
    const after = (await fh.stat({ bigint: true })) as unknown as BigStats;
    return { chunks, size, read, stamp: stampOf(after), stable: stampOf(before) === stampOf(after) && BigInt(size) === after.size };
  } finally {
    await fh.close();
  }
}

/**
 * Captures `root` into chunks in `store` (written without fsync: call store.flush() before offering them)
 * and a manifest. Throws VolumeTooLarge past the limits.
 */
export async function capture(
  root: string,
  instanceId: string,
  index: CaptureIndex,
  store: ChunkStore,
  opts: CaptureOptions,
): Promise<Capture> {
  const skipped: string[] = [];
  const walked = await walk(root, opts, skipped);
  const entries: ManifestEntry[] = [];
  const next: CaptureIndex = new Map();
  let bytes = 0;
  let readBytes = 0;
  let unstable = false;
  for (const w of walked) {
    const mode = Number(w.st.mode) & 0o7777;
    if (w.st.isDirectory()) {
      entries.push({ type: 'dir', path: w.rel, mode });
      next.set(w.rel, { stamp: '', chunks: [], size: 0, mode });
      continue;
    }
    const known = index.get(w.rel);
    // Reuse only chunks still held: collection never removes those of the last committed snapshot, but a
    // capture that was never committed may name chunks collected since.
    if (known && known.stamp === stampOf(w.st) && known.chunks.every((c) => store.has(c))) {
      entries.push({ type: 'file', path: w.rel, mode, size: known.size, chunks: known.chunks });
      next.set(w.rel, { ...known, mode });
      bytes += known.size;
    } else {
      const read = await readFile(w, store, opts, skipped);
      if (!read) continue;
      if (!read.stable) unstable = true;
      entries.push({ type: 'file', path: w.rel, mode, size: read.size, chunks: read.chunks });
      next.set(w.rel, { stamp: read.stamp, chunks: read.chunks, size: read.size, mode });
      bytes += read.size;
      readBytes += read.read;
    }
    if (bytes > opts.limits.maxBytes) throw new VolumeTooLarge(`the volume holds more than ${opts.limits.maxBytes} bytes`);
  }
  // A directory left out takes its contents with it: drop entries whose parent is not captured.
  const dirs = new Set(entries.filter((e) => e.type === 'dir').map((e) => e.path));
  const kept = entries.filter((e) => {
    const slash = e.path.lastIndexOf('/');
    return slash < 0 || dirs.has(e.path.slice(0, slash));
  });
  return { manifest: { format: MANIFEST_FORMAT, instanceId, entries: kept }, index: next, bytes, readBytes, skipped, unstable };
}
