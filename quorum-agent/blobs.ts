/**
 * Content-addressed blob storage in the agent's data dir. A blob is written to a temp file while its
 * SHA-256 is computed, and only renamed into place once the hash matches: a blob on disk is always whole
 * and verified.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';

export class BlobTooLargeError extends Error {}

export class BlobStore {
  constructor(private readonly dir: string) {
    mkdirSync(join(dir, 'tmp'), { recursive: true });
  }

  path(sha256: string): string {
    return join(this.dir, sha256);
  }

  has(sha256: string): boolean {
    return /^[0-9a-f]{64}$/.test(sha256) && existsSync(this.path(sha256));
  }

  size(sha256: string): number {
    return statSync(this.path(sha256)).size;
  }

  /**
   * Streams `source` into the store. With `expected`, the blob is kept only if it hashes to it.
   * Returns the hash and size of what was stored.
   */
  async write(
    source: Readable | AsyncIterable<Uint8Array>,
    opts: { expected?: string; maxBytes?: number } = {},
  ): Promise<{ sha256: string; size: number }> {
    const tmp = join(this.dir, 'tmp', randomBytes(8).toString('hex'));
    const hash = createHash('sha256');
    let size = 0;
    const max = opts.maxBytes ?? Number.POSITIVE_INFINITY;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        size += chunk.length;
        if (size > max) return cb(new BlobTooLargeError(`artifact exceeds the limit of ${max} bytes`));
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(source instanceof Readable ? source : Readable.from(source), meter, createWriteStream(tmp));
      const sha256 = hash.digest('hex');
      if (opts.expected && opts.expected !== sha256) throw new Error(`blob hash mismatch: expected ${opts.expected}, got ${sha256}`);
      renameSync(tmp, this.path(sha256));
      return { sha256, size };
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  read(sha256: string): Readable {
    return createReadStream(this.path(sha256));
  }

  /** Unpacks a gzipped tar blob into `target` (once: an existing complete unpack is reused). */
  async unpack(sha256: string, target: string): Promise<void> {
    const marker = join(target, '.allegra-unpacked');
    if (existsSync(marker)) return;
    rmSync(target, { recursive: true, force: true });
    mkdirSync(target, { recursive: true });
    await tar.x({ file: this.path(sha256), cwd: target, strict: true, preservePaths: false });
    writeFileSync(marker, sha256);
  }
}
