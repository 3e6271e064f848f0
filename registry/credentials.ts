/**
 * Credentials of the embedded registry: one random bearer token per role, minted by the host the first time
 * it starts a data dir and kept in `<dir>/credentials/<role>.token` (directory 0700, files 0600), so only the
 * operator's user can read them. The host maps a presented token to its role; anything else is refused.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ROLES, type Role } from '../protocol/roles.js';
import { fsyncDir } from './journal.js';

/** The environment variable that hands a registry credential (an embedded token) to a child process. */
export const TOKEN_ENV = 'ALLEGRA_REGISTRY_TOKEN';

const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export function credentialsDir(registryDir: string): string {
  return join(registryDir, 'credentials');
}

export function tokenFile(registryDir: string, role: Role): string {
  return join(credentialsDir(registryDir), `${role}.token`);
}

/** Reads every role's token, minting the missing ones; tightens permissions that were loosened. */
export function loadOrMintTokens(registryDir: string): Record<Role, string> {
  const dir = credentialsDir(registryDir);
  const created = !existsSync(dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  if (created) fsyncDir(registryDir);
  const tokens = {} as Record<Role, string>;
  let minted = false;
  for (const role of ROLES) {
    const file = tokenFile(registryDir, role);
    if (existsSync(file)) {
      chmodSync(file, 0o600);
      const token = readFileSync(file, 'utf8').trim();
      if (!TOKEN_PATTERN.test(token)) throw new Error(`registry credential ${file} is damaged: delete it to mint a new one`);
      tokens[role] = token;
      continue;
    }
    const token = randomBytes(32).toString('base64url');
    const fd = openSync(file, 'wx', 0o600);
    try {
      writeSync(fd, `${token}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    tokens[role] = token;
    minted = true;
  }
  if (minted) fsyncDir(dir);
  return tokens;
}

/** A client's token for `role` from the credentials directory, with an error that says what to do. */
export function readToken(registryDir: string, role: Role): string {
  const file = tokenFile(registryDir, role);
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'EACCES' ? 'not readable by this user' : code === 'ENOENT' ? 'missing (has the registry host started once?)' : code;
    throw new Error(`registry credential ${file} is ${why}: pass the token in ${TOKEN_ENV} instead`);
  }
  if (!TOKEN_PATTERN.test(token)) throw new Error(`registry credential ${file} is damaged`);
  return token;
}

/** Maps a presented token to its role in constant time. */
export class TokenTable {
  private readonly digests: Array<{ role: Role; digest: Buffer }>;

  constructor(tokens: Record<Role, string>) {
    this.digests = ROLES.map((role) => ({ role, digest: sha256(tokens[role]) }));
  }

  roleOf(presented: string | undefined): Role | undefined {
    if (presented === undefined || presented.length > 256) return undefined;
    const digest = sha256(presented);
    let found: Role | undefined;
    // Compare against every role, so the time taken does not depend on which one matched.
    for (const d of this.digests) if (timingSafeEqual(d.digest, digest)) found = d.role;
    return found;
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
