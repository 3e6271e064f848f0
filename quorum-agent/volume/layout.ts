/**
 * What a volume is made of, and the records that say which copy is the newest complete one.
 *
 *   volumes/<instanceId>/writer   VolumeWriterRecord, under the writer's lease: exactly one writer at a time
 *   volumes/<instanceId>/head     VolumeHead, signed by the writer's node: the newest committed snapshot
 *
 * A snapshot is a manifest (JSON, itself stored as a content-addressed chunk) listing every directory and
 * file of the volume with the SHA-256 of each CHUNK_BYTES piece of its content. Chunks and manifests live in
 * each member's chunk store (chunks.ts) and travel between members over signed RPC (rpc.ts, transfer.ts). The head
 * is committed only once a majority of the quorum holds the manifest and every chunk it names, so it survives
 * the loss of any minority; and only while the writer record is still the committer's own (fencing).
 */
import { posix } from 'node:path';
import { z } from 'zod';
import type { RecordSignature } from '../../protocol/records.js';

/** Fixed-size chunks: an SQLite page change or an append re-sends one chunk, not the file. */
export const CHUNK_BYTES = 256 * 1024;
/** Largest blob the chunk routes accept: a chunk, or a manifest (bounded by the limits below). */
export const MAX_BLOB_BYTES = 16 * 1024 * 1024;

export interface VolumeLimits {
  /** Sum of file sizes a volume may hold; past it, snapshots stop (status says why) until it shrinks. */
  maxBytes: number;
  /** Files and directories. */
  maxEntries: number;
}

export const DEFAULT_VOLUME_LIMITS: VolumeLimits = { maxBytes: 1024 * 1024 * 1024, maxEntries: 10_000 };

const MAX_PATH_BYTES = 1024;
const MAX_DEPTH = 32;

/** Why a manifest path is unacceptable, or undefined: relative, normalized, no `..`, bounded. */
export function pathProblem(path: string): string | undefined {
  if (path.length === 0 || Buffer.byteLength(path) > MAX_PATH_BYTES) return 'paths are 1 to 1024 bytes';
  if (path.includes('\0')) return 'paths may not contain NUL';
  if (path.startsWith('/') || posix.normalize(path) !== path || path === '.' || path.split('/').includes('..'))
    return 'paths are relative and normalized, without ..';
  if (path.split('/').length > MAX_DEPTH) return `paths are at most ${MAX_DEPTH} levels deep`;
  return undefined;
}

const sha256 = z.string().regex(/^[0-9a-f]{64}$/);

export const manifestEntry = z.discriminatedUnion('type', [
  z.object({ type: z.literal('dir'), path: z.string(), mode: z.number().int().min(0).max(0o7777) }),
  z.object({
    type: z.literal('file'),
    path: z.string(),
    mode: z.number().int().min(0).max(0o7777),
    size: z.number().int().min(0),
    chunks: z.array(sha256),
  }),
]);
export type ManifestEntry = z.infer<typeof manifestEntry>;

export const MANIFEST_FORMAT = 'allegra-volume/1';

export const manifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  instanceId: z.string().min(1).max(128),
  entries: z.array(manifestEntry),
});
export type Manifest = z.infer<typeof manifestSchema>;

/** The manifest as bytes: entries sorted by path, so equal volumes give equal manifests (and one hash). */
export function encodeManifest(m: Manifest): Buffer {
  const entries = [...m.entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return Buffer.from(JSON.stringify({ format: m.format, instanceId: m.instanceId, entries }));
}

/** Parses and checks a manifest read from a chunk: schema, paths, sizes against chunk counts, limits. */
export function decodeManifest(bytes: Buffer, instanceId: string, limits: VolumeLimits): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new Error('the manifest is not JSON');
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`the manifest is malformed: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  const m = parsed.data;
  if (m.instanceId !== instanceId) throw new Error(`the manifest is of instance ${m.instanceId}, not ${instanceId}`);
  if (m.entries.length > limits.maxEntries) throw new Error(`the manifest lists more than ${limits.maxEntries} entries`);
  const seen = new Set<string>();
  let bytesTotal = 0;
  for (const e of m.entries) {
    const problem = pathProblem(e.path);
    if (problem) throw new Error(`manifest path ${JSON.stringify(e.path.slice(0, 80))}: ${problem}`);
    if (seen.has(e.path)) throw new Error(`the manifest lists ${e.path} twice`);
    seen.add(e.path);
    if (e.type === 'file') {
      if (e.chunks.length !== Math.ceil(e.size / CHUNK_BYTES)) throw new Error(`manifest entry ${e.path}: size and chunks disagree`);
      bytesTotal += e.size;
    }
  }
  if (bytesTotal > limits.maxBytes) throw new Error(`the manifest holds more than ${limits.maxBytes} bytes`);
  // Every entry's parent is listed as a directory (or is the root): a restore creates nothing implicitly.
  const dirs = new Set(m.entries.filter((e) => e.type === 'dir').map((e) => e.path));
  for (const e of m.entries) {
    const parent = posix.dirname(e.path);
    if (parent !== '.' && !dirs.has(parent)) throw new Error(`manifest entry ${e.path}: its directory is not listed`);
  }
  return m;
}

/** The writer of a volume (`volumes/<id>/writer`), created under the writer's lease. */
export interface VolumeWriterRecord {
  instanceId: string;
  nodeId: string;
  /** Random per term: tells this writer's record from an earlier one of the same node. */
  nonce: string;
  since: number;
}

export const writerRecord = z.object({
  instanceId: z.string(),
  nodeId: z.string(),
  nonce: z.string(),
  since: z.number(),
});

/** The newest committed snapshot of a volume (`volumes/<id>/head`). */
export interface VolumeHead {
  instanceId: string;
  /** Node that committed it (the writer of `term`). */
  writer: string;
  /** Registry revision at which the writer's term began (its writer record's creation). */
  term: number;
  /** Grows with every committed snapshot, across terms. */
  seq: number;
  /** SHA-256 of the manifest chunk. */
  manifest: string;
  bytes: number;
  entries: number;
  /** When the writer captured the snapshot (its clock, ms): what was written after it is not in it. */
  capturedAt: number;
  committedAt: number;
  /** Members that held the manifest and all its chunks when the head was committed (a majority). */
  holders: string[];
  signature?: RecordSignature;
}

export const volumeHead = z.object({
  instanceId: z.string(),
  writer: z.string(),
  term: z.number().int(),
  seq: z.number().int().min(0),
  manifest: sha256,
  bytes: z.number().int().min(0),
  entries: z.number().int().min(0),
  capturedAt: z.number(),
  committedAt: z.number(),
  holders: z.array(z.string()).max(64),
  signature: z.object({ key: z.string().regex(/^[0-9a-f]{64}$/), sig: z.string().max(200) }).optional(),
});

/** Every chunk a manifest needs, itself included. */
export function chunksOf(manifestSha: string, m: Manifest): Set<string> {
  const all = new Set([manifestSha]);
  for (const e of m.entries) if (e.type === 'file') for (const c of e.chunks) all.add(c);
  return all;
}
