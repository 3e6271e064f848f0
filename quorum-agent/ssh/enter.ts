/**
 * The command line that runs a process inside a running replica's sandbox, as its instance's uid: join the
 * replica's cgroups first (so the session counts against its limits and dies with it), then its mount, uts,
 * ipc, net, pid and cgroup namespaces through its init (nsenter, as root), then drop to the instance's uid
 * with no capabilities and no_new_privs (setpriv) before anything the user asked for runs. Never a shell on
 * the host. Pure, so what a session can reach is readable in one place.
 */
import { INSIDE, inCgroups } from '../sandbox/bwrap.js';
import type { EnterTarget } from '../sandbox/sandbox.js';

export const NSENTER = '/usr/bin/nsenter';
/** Debian's `openssh-sftp-server`; /usr is bound read-only into every sandbox, so it exists inside too. */
export const SFTP_SERVER = '/usr/lib/openssh/sftp-server';

export function enterArgv(target: EnterTarget, command: string[], nsenter = NSENTER): string[] {
  return inCgroups(target.procsFiles, [
    nsenter,
    `--target=${target.initPid}`,
    '--mount',
    '--uts',
    '--ipc',
    '--net',
    '--pid',
    '--cgroup',
    // The sandbox's root and working directory (a path given here would be looked up on the host).
    '--root',
    '--wd',
    '--',
    target.setpriv,
    `--reuid=${target.uid}`,
    `--regid=${target.gid}`,
    '--clear-groups',
    '--no-new-privs',
    '--bounding-set=-all',
    '--inh-caps=-all',
    '--',
    '/bin/sh',
    '-c',
    `cd ${INSIDE.app} 2>/dev/null; exec "$@"`,
    'allegra-session',
    ...command,
  ]);
}

/** What an SSH request runs inside: a login shell, one command through the shell, or the SFTP server. */
export function sessionCommand(kind: 'shell' | 'exec' | 'sftp', command?: string): string[] {
  if (kind === 'sftp') return [SFTP_SERVER, '-e'];
  if (kind === 'exec') return ['/bin/bash', '-c', command ?? ''];
  return ['/bin/bash', '-il'];
}
