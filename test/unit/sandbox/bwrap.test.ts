import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  bwrapArgv,
  INIT_SCRIPT,
  INSIDE,
  identityFiles,
  inCgroups,
  relayAddresses,
  type SandboxCommand,
} from '../../../quorum-agent/sandbox/bwrap.js';
import { tempDir } from '../../helpers/tmp.js';

const base: SandboxCommand = {
  tools: {
    bwrap: '/usr/bin/bwrap',
    setpriv: '/usr/bin/setpriv',
    bash: '/bin/bash',
    socat: '/usr/bin/socat',
    setsid: '/usr/bin/setsid',
    nsenter: '/usr/bin/nsenter',
  },
  system: {
    topLevel: [{ name: 'bin', symlink: 'usr/bin' }, { name: 'lib', symlink: 'usr/lib' }, { name: 'opt2' }],
    etc: ['/etc/hosts', '/etc/ssl/certs', '/etc/resolv.conf'],
    extraRo: ['/opt/node-v20'],
  },
  artifactDir: '/var/agent/apps/i-1/abc',
  dataDir: '/var/agent/sandbox/replicas/i-1/0/data',
  runDir: '/var/agent/sandbox/run/i-1.0.x/sock',
  passwdFile: '/var/agent/sandbox/run/i-1.0.x/passwd',
  groupFile: '/var/agent/sandbox/run/i-1.0.x/group',
  uid: 200_007,
  gid: 200_007,
  hostname: 'app-0',
  port: 3000,
  cmd: 'node server.js',
  infoFd: 3,
};

/** Every (source, destination) mount of an argv, by kind. */
function mounts(argv: string[]): Array<{ kind: string; from: string; to: string }> {
  const out: Array<{ kind: string; from: string; to: string }> = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (['--ro-bind', '--ro-bind-try', '--bind', '--symlink'].includes(a)) {
      out.push({ kind: a, from: argv[i + 1] as string, to: argv[i + 2] as string });
      i += 2;
    } else if (['--proc', '--dev', '--tmpfs', '--dir'].includes(a)) {
      out.push({ kind: a, from: '', to: argv[i + 1] as string });
      i += 1;
    }
    if (a === base.tools.setpriv) break;
  }
  return out;
}

describe('bwrapArgv', () => {
  const argv = bwrapArgv(base);

  it('unshares every namespace but the user one, dies with its parent and starts a new session', () => {
    for (const flag of [
      '--unshare-pid',
      '--unshare-net',
      '--unshare-ipc',
      '--unshare-uts',
      '--unshare-cgroup-try',
      '--die-with-parent',
      '--new-session',
    ])
      expect(argv).toContain(flag);
    expect(argv).not.toContain('--share-net');
    expect(argv.slice(argv.indexOf('--info-fd'), argv.indexOf('--info-fd') + 2)).toEqual(['--info-fd', '3']);
  });

  it('mounts the artifact read-only, the data and run dirs writable, and nothing else of the host writable', () => {
    const m = mounts(argv);
    expect(m).toContainEqual({ kind: '--ro-bind', from: base.artifactDir, to: INSIDE.app });
    const writable = m.filter((x) => x.kind === '--bind');
    expect(writable).toEqual([
      { kind: '--bind', from: base.dataDir, to: INSIDE.data },
      { kind: '--bind', from: base.runDir, to: INSIDE.run },
    ]);
    // Every host path mounted is one of the replica's own, a system dir, or a listed /etc entry.
    const allowed = new Set([
      base.artifactDir,
      base.dataDir,
      base.runDir,
      base.passwdFile,
      base.groupFile,
      '/usr',
      '/opt2',
      '/opt/node-v20',
      ...base.system.etc,
    ]);
    for (const x of m.filter((x) => x.kind !== '--symlink' && x.from)) expect(allowed.has(x.from), x.from).toBe(true);
    expect(m.find((x) => x.from === '/etc')).toBeUndefined();
    expect(m).toContainEqual({ kind: '--tmpfs', from: '', to: '/tmp' });
    expect(m).toContainEqual({ kind: '--proc', from: '', to: '/proc' });
    expect(m).toContainEqual({ kind: '--symlink', from: 'usr/bin', to: '/bin' });
    expect(m).toContainEqual({ kind: '--ro-bind', from: '/opt2', to: '/opt2' });
  });

  it('replaces passwd and group with generated files and makes nested /etc dirs readable', () => {
    const m = mounts(argv);
    expect(m).toContainEqual({ kind: '--ro-bind', from: base.passwdFile, to: '/etc/passwd' });
    expect(m).toContainEqual({ kind: '--ro-bind', from: base.groupFile, to: '/etc/group' });
    expect(m).toContainEqual({ kind: '--ro-bind-try', from: '/etc/ssl/certs', to: '/etc/ssl/certs' });
    const sslDir = argv.indexOf('/etc/ssl');
    expect(argv.slice(sslDir - 3, sslDir + 1)).toEqual(['--perms', '0755', '--dir', '/etc/ssl']);
  });

  it('drops to the instance uid/gid with no groups, no capabilities and no_new_privs, then runs the init script', () => {
    const at = argv.indexOf(base.tools.setpriv);
    expect(argv.slice(at, at + 9)).toEqual([
      '/usr/bin/setpriv',
      '--reuid=200007',
      '--regid=200007',
      '--clear-groups',
      '--no-new-privs',
      '--bounding-set=-all',
      '--inh-caps=-all',
      '--',
      '/bin/bash',
    ]);
    expect(argv.slice(at + 9, at + 14)).toEqual(['-c', INIT_SCRIPT, 'allegra-init', '/usr/bin/socat', '/usr/bin/setsid']);
    expect(argv.slice(-4)).toEqual([
      `UNIX-LISTEN:${INSIDE.socket},fork,mode=0666,backlog=1024`,
      'TCP:127.0.0.1:3000',
      '--',
      'node server.js',
    ]);
    expect(argv[argv.indexOf('--chdir') + 1]).toBe(INSIDE.app);
  });

  it('offers exposed host sockets read-only inside, relayed to 127.0.0.1:port', () => {
    const withState = bwrapArgv({ ...base, exposed: [{ hostPath: '/var/agent/state/i-1/api.sock', port: 7171 }] });
    // The socket's directory is bound, not the socket file: a socket recreated there stays reachable.
    expect(mounts(withState)).toContainEqual({ kind: '--ro-bind', from: '/var/agent/state/i-1', to: `${INSIDE.exposed}/0` });
    expect(relayAddresses(3000, [{ hostPath: '/x/api.sock', port: 7171 }])[1]).toEqual([
      'TCP-LISTEN:7171,bind=127.0.0.1,fork,reuseaddr,backlog=256',
      `UNIX-CONNECT:${INSIDE.exposed}/0/api.sock`,
    ]);
    expect(withState.slice(-6, -2)).toEqual(relayAddresses(3000, [{ hostPath: '/var/agent/state/i-1/api.sock', port: 7171 }]).flat());
  });
});

describe('inCgroups', () => {
  it('writes the pid that becomes bwrap into every cgroup.procs before exec', () => {
    const dir = tempDir('allegra-cg-');
    try {
      const files = [join(dir.path, 'a'), join(dir.path, 'b')];
      for (const f of files) writeFileSync(f, '');
      const argv = inCgroups(files, ['/bin/sh', '-c', 'echo $$']);
      const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8' });
      expect(r.status).toBe(0);
      const execPid = r.stdout.trim();
      expect(execPid).toMatch(/^\d+$/);
      for (const f of files) expect(readFileSync(f, 'utf8').trim()).toBe(execPid);
    } finally {
      dir.cleanup();
    }
  });

  it('fails (125) without running the command when a cgroup cannot be joined', () => {
    const argv = inCgroups(['/nonexistent/cgroup.procs'], ['/bin/sh', '-c', 'echo ran']);
    const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8' });
    expect(r.status).toBe(125);
    expect(r.stdout).toBe('');
  });
});

describe('identityFiles', () => {
  it('names the replica user and nobody else but root and nobody', () => {
    const { passwd, group } = identityFiles(200_001, 200_001);
    expect(
      passwd
        .trim()
        .split('\n')
        .map((l) => l.split(':')[2]),
    ).toEqual(['0', '200001', '65534']);
    expect(group).toContain('app:x:200001:');
  });
});
