/**
 * Credentials files for etcd with auth enabled, one per role, written by `allegra registry setup-auth` (0600,
 * in a 0700 directory) and read by agents, gateways and devnet (`--registry-credentials FILE`, or the file named
 * by ALLEGRA_REGISTRY_CREDENTIALS).
 */
import { chmodSync, closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ROLES, type Role } from '../protocol/roles.js';
import { fsyncDir } from './journal.js';

/** The environment variable naming a credentials file (a path, not a secret: the file is the operator's). */
export const CREDENTIALS_ENV = 'ALLEGRA_REGISTRY_CREDENTIALS';

export interface EtcdCredentials {
  role: Role;
  username: string;
  password: string;
}

/** etcd users and roles are named after the registry role. */
export function etcdNameOf(role: Role): string {
  return `allegra-${role}`;
}

const file = z.object({
  role: z.enum([...ROLES, 'root']),
  username: z.string().min(1),
  password: z.string().min(1),
});

export function credentialsFileOf(dir: string, role: Role | 'root'): string {
  return join(dir, `${role}.json`);
}

function readCredentialsFile(path: string): z.infer<typeof file> {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(
      `registry credentials ${path}: ${code === 'EACCES' ? 'not readable by this user' : code === 'ENOENT' ? 'no such file' : code}`,
    );
  }
  let parsed: z.ZodSafeParseResult<z.infer<typeof file>>;
  try {
    parsed = file.safeParse(JSON.parse(raw));
  } catch {
    throw new Error(`registry credentials ${path}: not JSON`);
  }
  if (!parsed.success) throw new Error(`registry credentials ${path}: not a credentials file written by \`allegra registry setup-auth\``);
  return parsed.data;
}

/** A role's credentials; the root user's file is refused here (no daemon should run as etcd root). */
export function readEtcdCredentials(path: string): EtcdCredentials {
  const creds = readCredentialsFile(path);
  if (creds.role === 'root')
    throw new Error(`registry credentials ${path} are etcd's root user: use a role's file (agent, gateway, admin)`);
  return { role: creds.role, username: creds.username, password: creds.password };
}

/** The root user's credentials, if setup-auth wrote them before. */
export function readRootCredentials(dir: string): { username: string; password: string } | undefined {
  const path = credentialsFileOf(dir, 'root');
  try {
    readFileSync(path);
  } catch {
    return undefined;
  }
  const creds = readCredentialsFile(path);
  return { username: creds.username, password: creds.password };
}

/** Writes one credentials file atomically with mode 0600 (the directory is made 0700). */
export function writeCredentialsFile(dir: string, role: Role | 'root', username: string, password: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const path = credentialsFileOf(dir, role);
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, `${JSON.stringify({ role, username, password }, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  fsyncDir(dir);
  return path;
}
