/**
 * Where a file holds data, so a capture reads only that: a VM's staged disk image is a fresh file each round
 * whose holes are not in the page cache, and reading a 1 GiB image of mostly holes costs a second of zero
 * filling where its 50 MiB of data cost a tenth of that. Node has no lseek(SEEK_DATA); `filefrag` (e2fsprogs,
 * already needed for the VM disks) reads the file's extent map (FIEMAP) and prints it.
 *
 * Anything unexpected (no filefrag, a file system without FIEMAP, output not understood) gives undefined and
 * the caller reads the whole file: a wrong answer here could only ever make a capture slower, never skip data,
 * because every byte between the extents it names must be a hole that reads as zeros.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Byte ranges [start, end) holding data (or reserved for it), sorted. */
export type Extents = Array<[number, number]>;

/** Parses `filefrag -v` output; undefined if it is not the table this expects. */
export function parseFilefrag(out: string): Extents | undefined {
  const header = /\((\d+) blocks? of (\d+) bytes\)/.exec(out);
  if (!header) return undefined;
  const block = Number(header[2]);
  if (!Number.isSafeInteger(block) || block <= 0) return undefined;
  const extents: Extents = [];
  for (const line of out.split('\n')) {
    const m = /^\s*\d+:\s+(\d+)\.\.\s*(\d+):/.exec(line);
    if (!m) continue;
    const start = Number(m[1]) * block;
    const end = (Number(m[2]) + 1) * block;
    if (!Number.isSafeInteger(end) || end <= start) return undefined;
    extents.push([start, end]);
  }
  const found = /: (\d+) extents? found/.exec(out);
  if (!found || Number(found[1]) !== extents.length) return undefined;
  return extents.sort((a, b) => a[0] - b[0]);
}

export async function dataExtents(file: string): Promise<Extents | undefined> {
  try {
    const { stdout } = await run('filefrag', ['-v', file], {
      timeout: 10_000,
      maxBuffer: 16 * 1024 * 1024,
      env: { LC_ALL: 'C', PATH: process.env.PATH ?? '' },
    });
    return parseFilefrag(stdout);
  } catch {
    return undefined;
  }
}

/** Whether [start, end) overlaps any extent (extents sorted by start). */
export function overlaps(extents: Extents, start: number, end: number): boolean {
  let lo = 0;
  let hi = extents.length;
  // The first extent that ends after `start`.
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((extents[mid] as [number, number])[1] <= start) lo = mid + 1;
    else hi = mid;
  }
  const e = extents[lo];
  return e !== undefined && e[0] < end;
}
