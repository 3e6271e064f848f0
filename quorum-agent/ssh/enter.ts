/**
 * The command line that runs a process inside a running replica's sandbox, as its instance's uid: join the
 * replica's cgroups first (so the session counts against its limits and dies with it), then its mount, uts,
 * ipc, net, pid and cgroup namespaces through its init (nsenter, as root), then drop to the instance's uid
 * with no capabilities and no_new_privs (setpriv) before anything the user asked for runs. Never a shell on
 * the host. Pure, so what a session can reach is readable in one place.
 */
import { readdirSync, readFileSync } from 'node:fs';
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

/**
 * What an SSH request runs inside: a login shell (interactive on a PTY, else reading commands from the
 * channel, as sshd does), one command through the shell, or the SFTP server.
 */
export function sessionCommand(kind: 'shell' | 'exec' | 'sftp', command?: string, pty = false): string[] {
  if (kind === 'sftp') return [SFTP_SERVER, '-e'];
  if (kind === 'exec') return ['/bin/bash', '-c', command ?? ''];
  return pty ? ['/bin/bash', '-il'] : ['/bin/bash', '-l'];
}

/**
 * Kills a session's whole process tree: nsenter forks into the sandbox's pid namespace and does not pass
 * signals on, and an interactive shell puts its jobs in process groups of their own, so neither the pid
 * nor its group reaches everything. Found by parent links in /proc (one scan, on session end only).
 */
export function killTree(root: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      /* gone meanwhile */
    }
  }
  const all: number[] = [];
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop() as number;
    all.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  for (const pid of all) {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}
