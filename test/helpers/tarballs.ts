/**
 * Hostile and ordinary artifacts, built byte by byte (ustar headers + padded contents, gzipped), so tests
 * can send what a real attacker would: links out of the app directory, `..` paths, hard links, devices,
 * millions of empty files, compression bombs, bytes that are not gzip at all.
 */
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, gzipSync } from 'node:zlib';
import { Header, type HeaderData } from 'tar';

export interface TarEntry {
  path: string;
  type?: HeaderData['type'];
  body?: string | Buffer;
  linkpath?: string;
  mode?: number;
  /** Declared size when it differs from the body (streamed bombs). */
  size?: number;
}

export function tarHeader(e: TarEntry): Buffer {
  const size = e.size ?? (e.body ? Buffer.byteLength(e.body) : 0);
  const type = e.type ?? 'File';
  const h = new Header({
    path: e.path,
    type,
    size: type === 'File' ? size : 0,
    mode: e.mode ?? (type === 'Directory' ? 0o755 : 0o644),
    linkpath: e.linkpath,
    mtime: new Date(0),
    uid: 0,
    gid: 0,
  });
  const block = Buffer.alloc(512);
  h.encode(block, 0);
  return block;
}

function pad(n: number): Buffer {
  return Buffer.alloc((512 - (n % 512)) % 512);
}

/** A whole tar (uncompressed) of small entries. */
export function tarOf(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    parts.push(tarHeader(e));
    if (e.body && (e.type ?? 'File') === 'File') {
      const body = Buffer.from(e.body);
      parts.push(body, pad(body.length));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export function tgzOf(entries: TarEntry[]): Buffer {
  return gzipSync(tarOf(entries));
}

/** Streams a gzipped tar to `file`: `count` empty files (a tar of many entries, tiny when compressed). */
export async function writeManyFilesTgz(file: string, count: number): Promise<void> {
  let i = 0;
  const source = new Readable({
    read() {
      if (i >= count) {
        this.push(Buffer.alloc(1024));
        this.push(null);
        return;
      }
      const batch: Buffer[] = [];
      for (let n = 0; n < 512 && i < count; n++, i++) batch.push(tarHeader({ path: `f/${i}` }));
      this.push(Buffer.concat(batch));
    },
  });
  await pipeline(source, createGzip(), createWriteStream(file));
}

/**
 * Writes a compression bomb to `file`: one file of `bytes` zeros (1 GiB gzips to about 1 MiB). Built from
 * gzip members (gunzip reads concatenated members as one stream), so only 64 MiB is ever compressed.
 */
export async function writeBombTgz(file: string, bytes: number): Promise<void> {
  const chunk = 64 * 1024 * 1024;
  if (bytes % chunk !== 0) throw new Error('bomb size must be a multiple of 64 MiB');
  const zeros = gzipSync(Buffer.alloc(chunk), { level: 9 });
  const out = createWriteStream(file);
  const write = (b: Buffer) => new Promise<void>((resolve, reject) => out.write(b, (err) => (err ? reject(err) : resolve())));
  await write(gzipSync(tarHeader({ path: 'zeros.bin', size: bytes })));
  for (let done = 0; done < bytes; done += chunk) await write(zeros);
  await write(gzipSync(Buffer.concat([pad(bytes), Buffer.alloc(1024)])));
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
}
