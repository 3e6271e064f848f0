/**
 * Packs a directory or a single file into the gzipped tar that `allegra deploy` uploads. The archive is
 * written to a temporary file, hashed on the way, so the upload streams from disk: a large app never sits
 * in the CLI's memory.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { CliError } from './output.js';

/** Directories never worth shipping: they are rebuilt or irrelevant on the replica. */
const SKIP = new Set(['.git', 'node_modules/.cache', '.allegra']);

export interface Bundle {
  /** The archive on disk; `cleanup` removes it. */
  file: string;
  sha256: string;
  size: number;
  files: number;
  cleanup(): void;
}

/**
 * Packs `path`; stops with a usage error as soon as the archive passes `maxBytes` (the network's upload
 * limit), naming it, instead of writing the rest. `onProgress` hears the bytes written so far. `mtime`
 * fixes every entry's time, so the same files always pack to the same bytes (and the same hash).
 */
export async function bundle(
  path: string,
  opts: { maxBytes?: number; onProgress?: (bytes: number, files: number) => void; mtime?: Date } = {},
): Promise<Bundle> {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new CliError(`nothing to deploy: ${path} does not exist`, 2);
  const isDir = statSync(abs).isDirectory();
  const cwd = isDir ? abs : dirname(abs);
  const entries = isDir ? ['.'] : [basename(abs)];
  const dir = mkdtempSync(join(tmpdir(), 'allegra-bundle-'));
  const file = join(dir, 'app.tar.gz');
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  let files = 0;
  let size = 0;
  const hash = createHash('sha256');
  const max = opts.maxBytes ?? Number.POSITIVE_INFINITY;
  const count = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      if (size > max)
        return cb(new CliError(`${path} packs to more than the upload limit of ${Math.floor(max / 1024 / 1024)} MiB (gzipped)`, 2));
      hash.update(chunk);
      opts.onProgress?.(size, files);
      cb(null, chunk);
    },
  });
  const stream = tar.c(
    {
      gzip: true,
      cwd,
      portable: true,
      ...(opts.mtime ? { mtime: opts.mtime } : {}),
      // node-tar reads up to 16 MiB of a file at once by default: a big app would sit in memory in pieces.
      maxReadSize: 1024 * 1024,
      filter: (p) => {
        const rel = p.replace(/^\.\//, '');
        if ([...SKIP].some((s) => rel === s || rel.startsWith(`${s}/`))) return false;
        files++;
        return true;
      },
    },
    entries,
  );
  try {
    await pipeline(stream, count, createWriteStream(file, { mode: 0o600 }));
  } catch (err) {
    cleanup();
    throw err;
  }
  return { file, sha256: hash.digest('hex'), size, files, cleanup };
}
