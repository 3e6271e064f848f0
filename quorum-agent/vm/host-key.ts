/**
 * The SSH host key of a VM replica's dropbear, made on the host (dropbear-bin's `dropbearkey`) and kept with
 * the instance's disk: the guest gets it in its seed, and the agent, which relays `allegra ssh` sessions into
 * the VM, checks the VM's server against it, so nothing else on the port can answer for the VM.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ed25519FromSsh } from '../../protocol/openssh.js';

export const DROPBEARKEY = '/usr/bin/dropbearkey';

/** The host key file at `path` (created once, in `workDir` first) and its public key as raw Ed25519 hex. */
export function ensureHostKey(path: string, workDir = dirname(path)): { file: string; publicKeyHex: string } {
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true });
    mkdirSync(workDir, { recursive: true });
    const tmp = join(workDir, `${basename(path)}.new`);
    rmSync(tmp, { force: true });
    execFileSync(DROPBEARKEY, ['-t', 'ed25519', '-f', tmp], { stdio: 'ignore' });
    renameSync(tmp, path);
  }
  const out = execFileSync(DROPBEARKEY, ['-y', '-f', path], { encoding: 'utf8' });
  const line = out.split('\n').find((l) => l.startsWith('ssh-ed25519 '));
  const publicKeyHex = line ? ed25519FromSsh(line.split(' ').slice(0, 2).join(' ')) : undefined;
  if (!publicKeyHex) throw new Error(`dropbearkey printed no Ed25519 public key for ${path}`);
  return { file: path, publicKeyHex };
}
