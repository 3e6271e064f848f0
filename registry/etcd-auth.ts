/**
 * `allegra registry setup-auth`: turns the role table (protocol/roles.ts) into etcd's own auth, idempotently.
 *
 * 1. Connects unauthenticated while etcd's auth is off, or as root with the `root.json` of an earlier run.
 * 2. Makes sure etcd's `root` user exists with the `root` role (a new random password when this run cannot
 *    know the old one, which is only possible while auth is off), and writes `root.json` before anything can
 *    lock it out.
 * 3. For admin, agent and gateway: the etcd role `allegra-<role>` with exactly the table's prefix permissions
 *    (stale ones are revoked), and the user `allegra-<role>` holding it; a user without a credentials file
 *    here gets a new random password and its file.
 * 4. Enables auth, then proves every file works by reading `config/` as that user.
 */
import { randomBytes } from 'node:crypto';
import { Etcd3, type IPermissionResult, Range } from 'etcd3';
import { GRANTS, type LimitedRole, ROLES, type Role } from '../protocol/roles.js';
import { credentialsFileOf, etcdNameOf, readEtcdCredentials, readRootCredentials, writeCredentialsFile } from './etcd-credentials.js';

type EtcdPermission = 'Read' | 'Write' | 'Readwrite';

interface Wanted {
  permission: EtcdPermission;
  range: Range;
}

/** etcd permissions of a role: the table's prefixes, or every key for admin. */
export function etcdPermissionsOf(role: Role): Wanted[] {
  if (role === 'admin') return [{ permission: 'Readwrite', range: Range.prefix('') }];
  return GRANTS[role as LimitedRole].map((g) => ({
    permission: g.read && g.write ? 'Readwrite' : g.write ? 'Write' : 'Read',
    range: Range.prefix(g.prefix),
  }));
}

const CALL = () => ({ deadline: Date.now() + 5_000 });

function newPassword(): string {
  return randomBytes(24).toString('base64url');
}

function sameRange(a: Range, b: Range): boolean {
  return a.start.equals(b.start) && a.end.equals(b.end);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export interface SetupResult {
  /** Credentials file of each role (and root). */
  files: Record<Role | 'root', string>;
  /** What this run changed, one line each; empty when everything was already in place. */
  changes: string[];
}

async function probe(client: Etcd3): Promise<void> {
  await client.auth.userList(CALL());
}

/** Connects as root if this dir knows root's password, else unauthenticated (which works only while auth is off). */
async function adminClient(endpoints: string[], dir: string): Promise<{ client: Etcd3; authEnabled: boolean }> {
  const root = readRootCredentials(dir);
  const plain = new Etcd3({ hosts: [...endpoints] });
  try {
    await probe(plain);
    return { client: plain, authEnabled: false };
  } catch (err) {
    plain.close();
    const text = errorText(err);
    const authOn = /user name is empty|permission denied|invalid auth token|auth/i.test(text);
    if (!authOn) throw new Error(`cannot reach etcd at ${endpoints.join(',')}: ${text}`);
    if (!root) {
      throw new Error(
        `etcd at ${endpoints.join(',')} already has auth enabled and ${credentialsFileOf(dir, 'root')} does not exist: ` +
          'pass the --credentials DIR of the run that enabled it',
      );
    }
  }
  const client = new Etcd3({ hosts: [...endpoints], auth: { username: root.username, password: root.password } });
  try {
    await probe(client);
  } catch (err) {
    client.close();
    throw new Error(`etcd refused the root credentials in ${credentialsFileOf(dir, 'root')}: ${errorText(err)}`);
  }
  return { client, authEnabled: true };
}

async function userExists(client: Etcd3, name: string): Promise<boolean> {
  const { users } = await client.auth.userList(CALL());
  return users.includes(name);
}

async function ensureRoleExists(client: Etcd3, name: string, changes: string[]): Promise<void> {
  const { roles } = await client.auth.roleList(CALL());
  if (roles.includes(name)) return;
  await client.auth.roleAdd({ name }, CALL());
  changes.push(`created etcd role ${name}`);
}

async function ensureUserHasRole(client: Etcd3, user: string, role: string, changes: string[]): Promise<void> {
  const { roles } = await client.auth.userGet({ name: user }, CALL());
  if (roles.includes(role)) return;
  await client.auth.userGrantRole({ user, role }, CALL());
  changes.push(`granted role ${role} to user ${user}`);
}

/** Makes the role's permissions exactly `wanted`. */
async function syncPermissions(client: Etcd3, name: string, wanted: Wanted[], changes: string[]): Promise<void> {
  const current: IPermissionResult[] = await client.role(name).permissions(CALL());
  for (const have of current) {
    if (wanted.some((w) => w.permission === have.permission && sameRange(w.range, have.range))) continue;
    await client.role(name).revoke({ permission: have.permission, range: have.range }, CALL());
    changes.push(`revoked ${have.permission} ${have.range.start.toString()} from ${name}`);
  }
  for (const w of wanted) {
    if (current.some((have) => have.permission === w.permission && sameRange(w.range, have.range))) continue;
    await client.role(name).grant({ permission: w.permission, range: w.range }, CALL());
    changes.push(`granted ${w.permission} ${JSON.stringify(w.range.start.toString())}… to ${name}`);
  }
}

export async function setupEtcdAuth(endpoints: string[], dir: string): Promise<SetupResult> {
  const { client, authEnabled } = await adminClient(endpoints, dir);
  const changes: string[] = [];
  const files = {} as Record<Role | 'root', string>;
  try {
    // root: etcd refuses to enable auth without it, and only root may manage users afterwards.
    let root = readRootCredentials(dir);
    if (!root || !authEnabled) {
      const exists = await userExists(client, 'root');
      if (!root || !exists) {
        const password = newPassword();
        if (exists) await client.auth.userChangePassword({ name: 'root', password }, CALL());
        else await client.auth.userAdd({ name: 'root', password, options: { no_password: false } }, CALL());
        root = { username: 'root', password };
        changes.push(exists ? 'set a new password for etcd user root' : 'created etcd user root');
      }
    }
    files.root = writeCredentialsFile(dir, 'root', root.username, root.password);
    await ensureRoleExists(client, 'root', changes);
    await ensureUserHasRole(client, 'root', 'root', changes);

    for (const role of ROLES) {
      const name = etcdNameOf(role);
      await ensureRoleExists(client, name, changes);
      await syncPermissions(client, name, etcdPermissionsOf(role), changes);
      const path = credentialsFileOf(dir, role);
      let known: string | undefined;
      try {
        known = readEtcdCredentials(path).password;
      } catch {
        known = undefined;
      }
      const exists = await userExists(client, name);
      if (!exists || known === undefined) {
        const password = newPassword();
        if (exists) await client.auth.userChangePassword({ name, password }, CALL());
        else await client.auth.userAdd({ name, password, options: { no_password: false } }, CALL());
        known = password;
        changes.push(exists ? `set a new password for etcd user ${name}` : `created etcd user ${name}`);
      }
      files[role] = writeCredentialsFile(dir, role, name, known);
      await ensureUserHasRole(client, name, name, changes);
    }

    if (!authEnabled) {
      await client.auth.authEnable(CALL());
      changes.push('enabled etcd auth');
    }
  } finally {
    client.close();
  }
  // Every file must work: a user whose file kept an old password would otherwise fail at its first start.
  for (const role of ROLES) {
    const creds = readEtcdCredentials(files[role]);
    const check = new Etcd3({ hosts: [...endpoints], auth: { username: creds.username, password: creds.password } });
    try {
      await check.get('config/network').exec();
    } catch (err) {
      throw new Error(`etcd refused ${files[role]}: ${errorText(err)}; delete the file and run setup-auth again`);
    } finally {
      check.close();
    }
  }
  return { files, changes };
}
