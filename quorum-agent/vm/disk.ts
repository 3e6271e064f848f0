/**
 * The writable disk of a VM replica (label `allegra-data`, the guest's /data): one sparse ext4 image file
 * per instance and slot, created on the first boot and kept across restarts, stops and agent restarts, so
 * it is the instance's volume on this node. Its size is the instance's disk limit. The replicated-volume
 * machinery (one writer, content-addressed chunks copied to every quorum member) takes this file as the
 * unit it replicates (a vm instance's disk lives in its volume's live directory); see docs/VM.md.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * Creates the volume at `path` with `sizeMb` unless it exists; grows an existing one that is smaller. A new
 * disk is formatted in `workDir` (default: beside it) and renamed into place: where `path` is in a replicated
 * volume, no snapshot ever sees a half-formatted file.
 */
export function ensureDisk(path: string, sizeMb: number, workDir = dirname(path)): { created: boolean; grown: boolean } {
  const bytes = sizeMb * 1024 * 1024;
  if (existsSync(path)) {
    if (statSync(path).size >= bytes) return { created: false, grown: false };
    // Growing is safe while no VM has it open (the driver calls this before QEMU starts).
    truncateSync(path, bytes);
    execFileSync('e2fsck', ['-f', '-p', path], { stdio: 'ignore' });
    execFileSync('resize2fs', [path], { stdio: 'ignore' });
    return { created: false, grown: true };
  }
  mkdirSync(dirname(path), { recursive: true });
  mkdirSync(workDir, { recursive: true });
  const tmp = join(workDir, `${basename(path)}.new`);
  writeFileSync(tmp, '');
  truncateSync(tmp, bytes);
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'allegra-data', '-E', 'root_owner=0:0', tmp], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // Renamed into place only once formatted: a crash midway never leaves a blank disk that looks like a volume.
  renameSync(tmp, path);
  return { created: true, grown: false };
}
