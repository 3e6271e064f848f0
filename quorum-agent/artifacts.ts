/**
 * Artifacts (gzipped tars of an app) are tenant input: a 1 MiB gzip can expand to a terabyte, a tar can
 * name `../../etc/passwd`, link to the agent's key or hold millions of empty files. Every artifact is read
 * as a stream with limits on total unpacked bytes, entries, path depth, expansion ratio and time, and only
 * regular files, directories and symbolic links that stay inside the app's directory are accepted. The
 * same checks run when an upload arrives (so the developer gets the reason at once) and when a member
 * unpacks it (a blob can also come from a peer). Extraction goes to a temporary directory that is renamed
 * into place only when complete, with normalized permissions (0644/0755, no set-id bits, owner ignored).
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { posix } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar';

export interface ArtifactLimits {
  /** Sum of the sizes of all files. */
  maxUnpackedBytes: number;
  maxEntries: number;
  /** Path components of the deepest entry. */
  maxDepth: number;
  /** Unpacked bytes per compressed byte, checked once `ratioFloorBytes` have been unpacked. */
  maxRatio: number;
  ratioFloorBytes: number;
  /** Wall-clock limit of one inspection or extraction. */
  maxMs: number;
}

export const DEFAULT_ARTIFACT_LIMITS: ArtifactLimits = {
  maxUnpackedBytes: 1024 * 1024 * 1024,
  maxEntries: 50_000,
  maxDepth: 32,
  maxRatio: 100,
  ratioFloorBytes: 16 * 1024 * 1024,
  maxMs: 120_000,
};

/** The artifact is unacceptable; the message says why, for the developer. */
export class ArtifactRefused extends Error {
  override readonly name = 'ArtifactRefused';
}

export interface ArtifactSummary {
  entries: number;
  bytes: number;
}

const GZIP_MAGIC = [0x1f, 0x8b];

/** Checks one tar entry; returns why it is refused, or undefined. Exported for unit tests. */
export function entryProblem(entry: { path: string; type: string; linkpath?: string }, limits: ArtifactLimits): string | undefined {
  const path = entry.path;
  if (path.length > 4096) return 'an entry path is longer than 4096 characters';
  if (path.includes('\0')) return 'an entry path contains a NUL byte';
  if (path.startsWith('/') || /^[a-zA-Z]:/.test(path)) return `entry "${path}" has an absolute path`;
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return `entry "${path}" climbs out of the app directory ("..")`;
  if (parts.length > limits.maxDepth) return `entry "${path}" is nested deeper than ${limits.maxDepth} levels`;
  switch (entry.type) {
    case 'File':
    case 'OldFile':
    case 'ContiguousFile':
    case 'Directory':
      return undefined;
    case 'SymbolicLink': {
      const target = entry.linkpath ?? '';
      if (target === '' || target.startsWith('/')) return `symbolic link "${path}" points outside the app directory (${target || 'empty'})`;
      const resolved = posix.normalize(posix.join(posix.dirname(parts.join('/')), target));
      if (resolved === '..' || resolved.startsWith('../')) return `symbolic link "${path}" points outside the app directory (${target})`;
      return undefined;
    }
    case 'Link':
      return `entry "${path}" is a hard link; hard links are not accepted`;
    default:
      return `entry "${path}" is a ${entry.type}; only files, directories and symbolic links are accepted`;
  }
}

/** Counts compressed bytes and enforces the expansion ratio against what the tar stream declared. */
class Meter {
  compressed = 0;
  /** Bytes out of gunzip so far. */
  inflated = 0;
  /** Declared sizes of the entries seen. */
  unpacked = 0;
  entries = 0;
  failure: ArtifactRefused | null = null;

  constructor(private readonly limits: ArtifactLimits) {}

  entry(entry: { path: string; type: string; linkpath?: string; size: number }): boolean {
    if (this.failure) return false;
    const problem = entryProblem(entry, this.limits);
    if (problem) return this.fail(problem);
    if (++this.entries > this.limits.maxEntries) return this.fail(`the artifact has more than ${this.limits.maxEntries} entries`);
    this.unpacked += entry.size;
    if (this.unpacked > this.limits.maxUnpackedBytes)
      return this.fail(`the artifact unpacks to more than ${this.limits.maxUnpackedBytes} bytes`);
    return true;
  }

  /**
   * The ratio of bytes actually inflated so far to compressed bytes read. (It used to compare declared entry
   * sizes with what little of the entry had been read, which refused every large incompressible file.)
   */
  checkRatio(): boolean {
    if (this.inflated > this.limits.ratioFloorBytes && this.inflated > this.compressed * this.limits.maxRatio)
      return this.fail(`the artifact expands more than ${this.limits.maxRatio}:1 (a compression bomb?)`);
    return true;
  }

  fail(reason: string): false {
    this.failure ??= new ArtifactRefused(reason);
    return false;
  }

  /** A pass-through that counts the compressed input and checks the gzip magic. */
  input(): Transform {
    let first = true;
    return new Transform({
      transform: (chunk: Buffer, _enc, cb) => {
        if (first) {
          first = false;
          if (chunk[0] !== GZIP_MAGIC[0] || (chunk.length > 1 && chunk[1] !== GZIP_MAGIC[1]))
            return cb(new ArtifactRefused('the artifact is not a gzipped tar'));
        }
        this.compressed += chunk.length;
        cb(null, chunk);
      },
    });
  }

  /** A pass-through after gunzip: counts inflated bytes and stops a bomb as it expands. */
  output(): Transform {
    return new Transform({
      transform: (chunk: Buffer, _enc, cb) => {
        this.inflated += chunk.length;
        if (!this.checkRatio()) return cb(this.failure);
        cb(null, chunk);
      },
    });
  }
}

async function run(
  file: string,
  limits: ArtifactLimits,
  sink: (meter: Meter) => NodeJS.WritableStream & { abort?(err: Error): void },
): Promise<ArtifactSummary> {
  const meter = new Meter(limits);
  const target = sink(meter);
  const input = meter.input();
  const timer = setTimeout(() => meter.fail(`unpacking took longer than ${limits.maxMs / 1000} s`), limits.maxMs);
  // The tar parser reports a refused entry through the meter; stop the whole stream at the next chunk.
  const guard = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (meter.failure) return cb(meter.failure);
      cb(null, chunk);
    },
  });
  try {
    // Gunzip here rather than in the tar parser, so the expansion is measured on the bytes it produces.
    await pipeline(createReadStream(file), input, createGunzip(), meter.output(), guard, target as unknown as NodeJS.WritableStream);
  } catch (err) {
    if (meter.failure) throw meter.failure;
    if (err instanceof ArtifactRefused) throw err;
    throw new ArtifactRefused(`the artifact is not a valid gzipped tar (${(err as Error).message})`);
  } finally {
    clearTimeout(timer);
  }
  if (meter.failure) throw meter.failure;
  if (meter.entries === 0) throw new ArtifactRefused('the artifact is empty');
  return { entries: meter.entries, bytes: meter.unpacked };
}

/** Reads the whole artifact without writing anything; throws ArtifactRefused with the reason. */
export function inspectArtifact(file: string, limits: ArtifactLimits = DEFAULT_ARTIFACT_LIMITS): Promise<ArtifactSummary> {
  return run(file, limits, (meter) => {
    const parser = new tar.Parser({
      strict: true,
      onReadEntry: (entry) => {
        meter.entry(entry);
        entry.resume();
      },
    });
    parser.on('warn', (_code: string, message: string) => meter.fail(`the artifact is not a valid tar (${message})`));
    return parser as unknown as NodeJS.WritableStream;
  });
}

/**
 * Extracts the artifact into `target` (created; must not exist yet) through a temporary sibling directory,
 * so `target` either holds the complete app or does not exist.
 */
export async function unpackArtifact(
  file: string,
  target: string,
  limits: ArtifactLimits = DEFAULT_ARTIFACT_LIMITS,
): Promise<ArtifactSummary> {
  // Read it once without writing: a refused artifact costs no disk and no inode, and refusal is fast.
  await inspectArtifact(file, limits);
  const tmp = `${target}.tmp-${randomBytes(4).toString('hex')}`;
  mkdirSync(tmp, { recursive: true, mode: 0o755 });
  try {
    const summary = await run(file, limits, (meter) => {
      const unpack = new tar.Unpack({
        cwd: tmp,
        strict: true,
        preservePaths: false,
        preserveOwner: false,
        noMtime: true,
        maxDepth: limits.maxDepth,
        filter: (_path, entry) => {
          const e = entry as tar.ReadEntry;
          if (!meter.entry(e)) return false;
          // Permissions are the network's, not the archive's: readable, executable where it was, no set-id.
          if (typeof e.mode === 'number') e.mode = e.type === 'Directory' || e.mode & 0o111 ? 0o755 : 0o644;
          return true;
        },
      });
      unpack.on('warn', (code: string, message: string) => {
        // Entries node-tar itself refuses (e.g. writing through a link) are refusals, not warnings, here.
        meter.fail(`the artifact cannot be unpacked safely (${code}: ${message})`);
      });
      return unpack as unknown as NodeJS.WritableStream;
    });
    if (existsSync(target)) rmSync(target, { recursive: true, force: true });
    renameSync(tmp, target);
    return summary;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
