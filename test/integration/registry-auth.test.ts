/**
 * The attack from issue 10, from outside: a process running as uid 65534 on the machine of a running
 * registry host (as `allegra devnet` hosts it, as root here) tries to read the credentials and data files, to
 * write `instances/<name>` through the socket (with no token, a guessed one, a flood) and to take the host's
 * lock name. Everything must be refused, and nothing may change. (What a client that reaches the socket
 * without a valid token gets, 401 for everything, is the permission contract's "unauthenticated" case.)
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Registry } from '../../protocol/registry.js';
import { socketPathFor } from '../../registry/embedded.js';
import { openRegistry } from '../../registry/open.js';
import { tempDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const HOST = fileURLToPath(new URL('../fixtures/registry-host.mjs', import.meta.url));
const ATTACKER = fileURLToPath(new URL('../fixtures/registry-attacker.mjs', import.meta.url));
const DIST = fileURLToPath(new URL('../../dist/', import.meta.url));
const SETPRIV = '/usr/bin/setpriv';

describe('an unprivileged local process against a running embedded registry', () => {
  const base = tempDir('allegra-regauth-');
  const dir = join(base.path, 'registry');
  let host: ChildProcess;
  let admin: Registry;

  beforeAll(async () => {
    if (!existsSync(SETPRIV)) throw new Error('setpriv not installed: run node scripts/install-deps.mjs (util-linux)');
    if (process.getuid?.() !== 0) throw new Error('this test drops privileges with setpriv and must run as root');
    // Only the registry's own permissions may stand between the attacker and the files.
    chmodSync(base.path, 0o755);
    host = spawn(process.execPath, [HOST, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve, reject) => {
      host.stdout?.once('data', resolve);
      host.once('exit', (code) => reject(new Error(`registry host exited with ${code}`)));
    });
    admin = await openRegistry(`embedded:${dir}`, { role: 'admin', host: 'never' });
    await admin.put('instances/app', JSON.stringify({ owner: 'owner-key' }));
    await admin.put('cert-keys/app.localhost', 'PRIVATE KEY');
  });

  afterAll(async () => {
    await admin?.close();
    if (host && host.exitCode === null) host.kill('SIGKILL');
    base.cleanup();
  });

  it('cannot read its credentials or data files, nor read or write through the socket', async () => {
    const { stdout } = await run(
      SETPRIV,
      ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, ATTACKER, dir, socketPathFor(dir), DIST],
      { timeout: 60_000 },
    );
    const report = JSON.parse(stdout) as {
      uid: number;
      files: Record<string, string>;
      http: Record<string, { status?: number; error?: string; body?: string; ms: number }>;
      lock: string;
      openRegistry: string;
    };
    expect(report.uid).toBe(65534);
    for (const [file, result] of Object.entries(report.files)) expect(result, file).toBe('EACCES');
    // The socket lives in the 0700 data dir: the attacker cannot even connect, let alone send a body.
    for (const [attempt, res] of Object.entries(report.http)) expect(res.error, attempt).toBe('EACCES');
    // The host holds its lock name: nobody can pose as the host while it runs.
    expect(report.lock).toBe('EADDRINUSE');
    expect(report.openRegistry).toMatch(/registry credential .*agent\.token is not readable by this user/);

    // Nothing changed, and the host still serves its clients.
    expect(JSON.parse((await admin.get('instances/app'))?.value ?? '{}')).toEqual({ owner: 'owner-key' });
    expect((await admin.list('')).items.map((kv) => kv.key)).toEqual(['cert-keys/app.localhost', 'instances/app']);
  });
});
