/** What an SSH session runs: joined to the replica's cgroups and namespaces, as the instance's uid, never root. */
import { describe, expect, it } from 'vitest';
import { enterArgv, sessionCommand } from '../../../quorum-agent/ssh/enter.js';
import { parseUser } from '../../../quorum-agent/ssh/server.js';

const target = {
  initPid: 4242,
  procsFiles: ['/cg/memory/s/r/cgroup.procs', '/cg/pids/s/r/cgroup.procs'],
  uid: 200007,
  gid: 200007,
  setpriv: '/usr/bin/setpriv',
  env: { PATH: '/usr/bin:/bin' },
};

describe('entering a replica for an SSH session', () => {
  it('joins the cgroups first, then every namespace of the sandbox, then drops to the instance uid', () => {
    const argv = enterArgv(target, sessionCommand('exec', 'id -u'));
    // The cgroup joiner writes its own pid into each procs file before exec'ing nsenter.
    expect(argv.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(argv.indexOf('/cg/memory/s/r/cgroup.procs')).toBeLessThan(argv.indexOf('/usr/bin/nsenter'));
    const ns = argv.slice(argv.indexOf('/usr/bin/nsenter'));
    expect(ns).toEqual(
      expect.arrayContaining(['--target=4242', '--mount', '--uts', '--ipc', '--net', '--pid', '--cgroup', '--root', '--wd']),
    );
    const priv = ns.slice(ns.indexOf('/usr/bin/setpriv'));
    expect(priv.slice(0, 7)).toEqual([
      '/usr/bin/setpriv',
      '--reuid=200007',
      '--regid=200007',
      '--clear-groups',
      '--no-new-privs',
      '--bounding-set=-all',
      '--inh-caps=-all',
    ]);
    // Nothing of the user's command runs before the drop.
    expect(argv.indexOf('id -u')).toBeGreaterThan(argv.indexOf('--inh-caps=-all'));
  });

  it('runs a shell, a command or the sftp server', () => {
    expect(sessionCommand('shell', undefined, true)).toEqual(['/bin/bash', '-il']);
    expect(sessionCommand('shell')).toEqual(['/bin/bash', '-l']);
    expect(sessionCommand('exec', 'exit 3')).toEqual(['/bin/bash', '-c', 'exit 3']);
    expect(sessionCommand('sftp')[0]).toBe('/usr/lib/openssh/sftp-server');
  });

  it('reads NAME or NAME.REPLICA as the user, nothing else', () => {
    expect(parseUser('hello')).toEqual({ name: 'hello' });
    expect(parseUser('hello.2')).toEqual({ name: 'hello', slot: 2 });
    for (const bad of ['Hello', 'hello.', 'hello.x', '-x', '../etc', 'a'.repeat(64)]) expect(parseUser(bad)).toBeUndefined();
  });
});
