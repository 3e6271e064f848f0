/**
 * A volume whose files are written in place all the time (a VM's disk image) is captured from a copy: the
 * replica is paused only while its files are copied — holes skipped, reflinked where the file system can,
 * tens of milliseconds for a mostly empty 1 GiB image — instead of while every chunk of them is read and
 * hashed (a few hundred). The copy is then captured with the replica running.
 *
 * Only the regular files at the top of the live directory are staged: the driver that asks for staging (the
 * vm driver) keeps nothing else there, and every file in it is the agent's own (the guest only ever sees the
 * image as a block device), so copying it cannot be turned against the agent.
 */
import { execFile } from 'node:child_process';
import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stampOf } from './capture.js';

const run = promisify(execFile);

/**
 * Copies the top-level regular files of `liveDir` into a fresh `stageDir`; returns, by file name, each live
 * file's stamp as it was copied (the caller holds the replica paused, so it is the stamp of what was copied).
 */
export async function stageFiles(liveDir: string, stageDir: string): Promise<Map<string, string>> {
  await rm(stageDir, { recursive: true, force: true });
  await mkdir(stageDir, { recursive: true, mode: 0o700 });
  const stamps = new Map<string, string>();
  const names: string[] = [];
  for (const d of await readdir(liveDir, { withFileTypes: true })) {
    if (!d.isFile()) continue;
    const st = await lstat(join(liveDir, d.name), { bigint: true });
    stamps.set(d.name, stampOf(st));
    names.push(join(liveDir, d.name));
  }
  if (names.length > 0)
    await run('cp', ['--no-dereference', '--preserve=mode', '--sparse=always', '--reflink=auto', '--', ...names, stageDir], {
      timeout: 60_000,
    });
  return stamps;
}
