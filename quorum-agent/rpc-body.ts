/**
 * Request bodies of the RPC API, read only after the signature over the headers checked out, never past a
 * per-route limit, and compared with the SHA-256 the signer declared. A body that is too large is refused
 * from its Content-Length before a byte is read, or as soon as the counted bytes pass the limit.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Readable, Transform } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Context } from 'hono';
import { AllegraError } from '../protocol/errors.js';

/** Limit of every JSON request body: the API's requests are small. */
export const JSON_BODY_LIMIT = 256 * 1024;

/** The request target exactly as received (what the client signed), not a re-serialized URL. */
export function rawPath(c: Context): string {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (incoming?.url) return incoming.url;
  const url = new URL(c.req.url);
  return `${url.pathname}${url.search}`;
}

function tooLarge(max: number): AllegraError {
  return new AllegraError(
    'too_large',
    max === 0 ? 'this endpoint takes no request body' : `request body exceeds the limit of ${max} bytes`,
  );
}

/** Refuses a declared Content-Length over `max` before anything is read. */
export function checkDeclaredLength(c: Context, max: number): void {
  const declared = c.req.header('content-length');
  if (declared !== undefined && !/^\d+$/.test(declared)) throw new AllegraError('bad_request', 'malformed Content-Length');
  if (declared !== undefined && Number(declared) > max) throw tooLarge(max);
}

/** Reads the whole body (at most `max` bytes) and checks it hashes to `sha256`. */
export async function readBody(c: Context, max: number, sha256: string): Promise<Uint8Array> {
  checkDeclaredLength(c, max);
  const stream = c.req.raw.body;
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (stream) {
    const reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > max) {
        await reader.cancel().catch(() => {});
        throw tooLarge(max);
      }
      chunks.push(value);
    }
  }
  const body = Buffer.concat(chunks);
  if (createHash('sha256').update(body).digest('hex') !== sha256)
    throw new AllegraError('bad_request', 'request body does not match its signed SHA-256');
  return body;
}

/** The body as a stream that fails once it passes `max` bytes (the consumer checks the hash). */
export function bodyStream(c: Context, max: number): Readable {
  checkDeclaredLength(c, max);
  const web = c.req.raw.body;
  if (!web) return Readable.from([]);
  let seen = 0;
  const limiter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > max) return cb(tooLarge(max));
      cb(null, chunk);
    },
  });
  const source = Readable.fromWeb(web as unknown as WebReadableStream<Uint8Array>);
  source.on('error', (err) => limiter.destroy(err));
  return source.pipe(limiter);
}
