/**
 * The seed of one boot of a VM replica: a small read-only ext4 disk (label `allegra-seed`) that the guest's
 * init reads (guest-init.ts), in the spirit of cloud-init's NoCloud seed. Written fresh for every boot from
 * the instance as it is now: the keys allowed to log in, the SSH host key, the app's files, its command and
 * environment. `mke2fs -d` (e2fsprogs) builds the image from a directory without mounting anything.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface SeedContent {
  hostname: string;
  /** `ssh-ed25519 AAAA…` lines: the owner's and team keys, and the node's own (the agent relays sessions with it). */
  authorizedKeys: string[];
  /** The SSH host key in dropbear's format (see host-key.ts). */
  hostKeyFile: string;
  /** Directory whose files become the guest's /app. */
  appDir: string;
  cmd: string;
  env: Record<string, string>;
}

/** A value as one single-quoted sh word. */
export function shQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `export NAME='value'` lines; names a shell cannot export are refused, not mangled. */
export function envFile(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => {
      if (!ENV_NAME.test(k)) throw new Error(`environment variable name ${JSON.stringify(k)} cannot be exported in a VM`);
      return `export ${k}=${shQuote(v)}\n`;
    })
    .join('');
}

function treeBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += 4096 + treeBytes(path);
    else if (entry.isFile()) total += Math.ceil(statSync(path).size / 4096) * 4096 + 4096;
    else total += 4096;
  }
  return total;
}

/** Writes `image` (replacing it) from `content`, staging the files under `staging`. */
export function writeSeed(image: string, staging: string, content: SeedContent): void {
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(join(staging, 'app'), { recursive: true });
  try {
    cpSync(content.appDir, join(staging, 'app'), { recursive: true, dereference: false, verbatimSymlinks: true });
    writeFileSync(join(staging, 'hostname'), `${content.hostname}\n`);
    writeFileSync(join(staging, 'authorized_keys'), `${content.authorizedKeys.join('\n')}\n`);
    cpSync(content.hostKeyFile, join(staging, 'host_key'));
    writeFileSync(join(staging, 'cmd'), content.cmd);
    writeFileSync(join(staging, 'env'), envFile(content.env));
    // Room for the files, their inodes and ext4's own metadata; no journal on a disk nobody writes.
    const mib = Math.ceil((treeBytes(staging) * 1.2) / (1024 * 1024)) + 8;
    rmSync(image, { force: true });
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-O', '^has_journal', '-L', 'allegra-seed', '-d', staging, image, `${mib}M`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
