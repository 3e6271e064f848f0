/**
 * Content-addressed blob storage in the agent's data dir. A blob is written to a temp file while its
 * SHA-256 is computed, and only renamed into place once the hash matches: a blob on disk is always whole
 * and verified.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  createWriteStream,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export class BlobTooLargeError extends Error {}
/** The bytes received are not the ones that were signed (or named): nothing was stored. */
export class BlobHashMismatchError extends Error {}

const SHA256 = /^[0-9a-f]{64}$/;

export class BlobStore {
  constructor(private readonly dir: string) {
    mkdirSync(join(dir, 'tmp'), { recursive: true });
  }

  path(sha256: string): string {
    return join(this.dir, sha256);
  }

  has(sha256: string): boolean {
    return SHA256.test(sha256) && existsSync(this.path(sha256));
  }

  /** Every blob held, by hash. */
  list(): string[] {
    return readdirSync(this.dir).filter((f) => SHA256.test(f));
  }

  remove(sha256: string): void {
    if (SHA256.test(sha256)) rmSync(this.path(sha256), { force: true });
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
      // flush: the blob is on disk before anyone is told this node holds it (a deploy counts on it).
      await pipeline(source instanceof Readable ? source : Readable.from(source), meter, createWriteStream(tmp, { flush: true }));
      const sha256 = hash.digest('hex');
      if (opts.expected && opts.expected !== sha256)
        throw new BlobHashMismatchError(`the bytes received hash to ${sha256}, not to the signed ${opts.expected}`);
      renameSync(tmp, this.path(sha256));
      fsyncDir(this.dir);
      return { sha256, size };
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  read(sha256: string): Readable {
    return createReadStream(this.path(sha256));
  }
}

/** Makes a rename or a new file in `dir` durable. */
function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
