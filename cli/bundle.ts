/** Packs a directory or a single file into the gzipped tar that `allegra deploy` uploads. */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import * as tar from 'tar';
import { sha256Hex } from '../protocol/signing.js';
import { CliError } from './output.js';

/** Directories never worth shipping: they are rebuilt or irrelevant on the replica. */
const SKIP = new Set(['.git', 'node_modules/.cache', '.allegra']);

/** `mtime` fixes every entry's time, so the same files always pack to the same bytes (and the same hash). */
export async function bundle(path: string, opts: { mtime?: Date } = {}): Promise<{ bytes: Buffer; sha256: string; files: number }> {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new CliError(`nothing to deploy: ${path} does not exist`, 2);
  const isDir = statSync(abs).isDirectory();
  const cwd = isDir ? abs : dirname(abs);
  const entries = isDir ? ['.'] : [basename(abs)];
  let files = 0;
  const chunks: Buffer[] = [];
  const stream = tar.c(
    {
      gzip: true,
      cwd,
      portable: true,
      ...(opts.mtime ? { mtime: opts.mtime } : {}),
      filter: (p) => {
        const rel = p.replace(/^\.\//, '');
        if ([...SKIP].some((s) => rel === s || rel.startsWith(`${s}/`))) return false;
        files++;
        return true;
      },
    },
    entries,
  );
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  const bytes = Buffer.concat(chunks);
  return { bytes, sha256: sha256Hex(bytes), files };
}
