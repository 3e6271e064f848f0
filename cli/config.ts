/**
 * Where the CLI finds its RPC endpoint and key (CLI.md): flags, then environment, then the files under
 * ALLEGRA_HOME (default ~/.allegra) that `allegra devnet` and `allegra keys init` write.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { openSshPrivateKey } from '../protocol/openssh.js';
import { generateKeyPair, type KeyPair, keyPairFromPem, privateKeyToPem } from '../protocol/signing.js';
import { CliError } from './output.js';

export interface CliConfig {
  /** Agents' RPC URLs; the CLI uses the first that answers. */
  rpc?: string | string[];
  http?: string;
  https?: string | null;
  dataDir?: string;
}

export function allegraHome(): string {
  return resolve(process.env.ALLEGRA_HOME ?? join(homedir(), '.allegra'));
}

export function configPath(): string {
  return join(allegraHome(), 'config.json');
}

export function readConfig(): CliConfig {
  try {
    return JSON.parse(readFileSync(configPath(), 'utf8')) as CliConfig;
  } catch {
    return {};
  }
}

export function writeConfig(config: CliConfig): void {
  mkdirSync(allegraHome(), { recursive: true });
  writeFileSync(configPath(), `${JSON.stringify(config, null, 2)}\n`);
}

/** The agents to talk to, in order of preference: `--rpc`, then ALLEGRA_RPC (both may list several, comma-separated), then the config. */
export function resolveRpc(flag: string | undefined): string[] {
  const raw = flag ?? process.env.ALLEGRA_RPC ?? readConfig().rpc;
  const list = (Array.isArray(raw) ? raw : (raw ?? '').split(',')).map((u) => u.trim()).filter(Boolean);
  if (list.length === 0) throw new CliError('no RPC endpoint: pass --rpc URL, set ALLEGRA_RPC, or start `allegra devnet`', 2);
  return list.map((rpc) => {
    try {
      const url = new URL(rpc);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http');
      return url.toString();
    } catch {
      throw new CliError(`invalid RPC endpoint "${rpc}": expected a URL like http://127.0.0.1:7070`, 2);
    }
  });
}

export function keyPath(flag: string | undefined): string {
  return resolve(flag ?? process.env.ALLEGRA_KEY ?? join(allegraHome(), 'key'));
}

export function loadKey(flag: string | undefined): KeyPair {
  const path = keyPath(flag);
  if (!existsSync(path)) throw new CliError(`no key at ${path}: run \`allegra keys init\` first`, 2);
  try {
    return keyPairFromPem(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new CliError(`cannot read key ${path}: ${(err as Error).message}`, 2);
  }
}

/** Creates a key at `path` unless one exists; returns it and whether it was created. */
export function ensureKey(path: string): { keyPair: KeyPair; created: boolean } {
  if (existsSync(path)) {
    const keyPair = keyPairFromPem(readFileSync(path, 'utf8'));
    ensureOpenSshKey(path, keyPair);
    return { keyPair, created: false };
  }
  const keyPair = generateKeyPair();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, privateKeyToPem(keyPair), { mode: 0o600, flag: 'wx' });
  ensureOpenSshKey(path, keyPair);
  return { keyPair, created: true };
}

/** Where the same key is kept in OpenSSH's format, for `ssh -i` (OpenSSH cannot read the PKCS#8 PEM). */
export function openSshKeyPath(path: string): string {
  return `${path}.openssh`;
}

/** Writes the OpenSSH form of the key beside it (0600) unless it is there. */
export function ensureOpenSshKey(path: string, keyPair: KeyPair): string {
  const file = openSshKeyPath(path);
  if (!existsSync(file)) writeFileSync(file, openSshPrivateKey(keyPair), { mode: 0o600 });
  return file;
}
