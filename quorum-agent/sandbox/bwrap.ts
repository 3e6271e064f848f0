/**
 * The bubblewrap command line of one sandbox. Pure: the same inputs give the same argv (unit-tested), so
 * what a replica can see is readable in one place:
 *
 *   /app            its artifact, read-only            /data          its own writable directory
 *   /tmp            a private tmpfs                     /run/allegra   the relay socket (http.sock)
 *   /volume         the instance's volume, writable (only the volume's writer, only with --volume)
 *   /usr (+ /bin, /lib… as on the host), a minimal /etc, /dev (null, zero, random…), its own /proc — read-only
 *
 * and nothing else: not the agent's data dir, not the rest of /etc, not /home, /root, /var, /sys. It runs
 * in new pid, network (loopback only), ipc, uts and cgroup namespaces, dies with its parent (the agent),
 * and drops to the instance's uid/gid with no capabilities and no_new_privs before anything of the tenant runs.
 */

import { posix } from 'node:path';

/** Paths inside the sandbox. */
export const INSIDE = {
  app: '/app',
  data: '/data',
  volume: '/volume',
  run: '/run/allegra',
  socket: '/run/allegra/http.sock',
  exposed: '/run/allegra-in',
} as const;

/** Host /etc entries a replica gets (read-only), if they exist. Never the whole /etc: operators keep secrets there. */
export const ETC_ENTRIES = [
  'hosts',
  'resolv.conf',
  'nsswitch.conf',
  'ssl/certs',
  'ssl/openssl.cnf',
  'ca-certificates',
  'localtime',
  'alternatives',
  'ld.so.cache',
  'ld.so.conf',
  'ld.so.conf.d',
];

/** How the host's root looks: merged-/usr symlinks (bin → usr/bin) are recreated, real directories bound read-only. */
export interface SystemLayout {
  topLevel: Array<{ name: string; symlink?: string }>;
  /** Absolute host paths of the /etc entries that exist. */
  etc: string[];
  /** Further read-only host directories at the same path (a Node.js installed outside /usr). */
  extraRo: string[];
}

/**
 * A host Unix socket offered inside the sandbox on 127.0.0.1:port (the state API, later features). Its
 * directory, one per socket and instance, is what the sandbox binds: a socket the agent recreates there
 * (its service restarted while the replica runs) is the one the replica reaches, where a bind of the
 * socket file itself would keep pointing at the old, dead one.
 */
export interface ExposedSocket {
  hostPath: string;
  port: number;
}

/** Absolute paths of the host tools a sandbox needs (found by the probe). */
export interface SandboxTools {
  bwrap: string;
  setpriv: string;
  bash: string;
  socat: string;
  setsid: string;
  /** Enters a running sandbox's namespaces for `exec` (SSH sessions, `allegra ssh NAME -- CMD`). */
  nsenter: string;
}

export interface SandboxCommand {
  tools: SandboxTools;
  system: SystemLayout;
  artifactDir: string;
  dataDir: string;
  /** The instance's volume (the writer's live directory), bound read-write at /volume. */
  volumeDir?: string;
  runDir: string;
  /** Generated passwd and group naming the instance's uid. */
  passwdFile: string;
  groupFile: string;
  uid: number;
  gid: number;
  hostname: string;
  /** The app listens here inside; the relay forwards the socket to it. */
  port: number;
  cmd: string;
  exposed?: ExposedSocket[];
  /** File descriptor bwrap writes its JSON info (the sandbox init's pid) to. */
  infoFd?: number;
}

/**
 * Runs as the replica's uid, as pid 2 under bwrap's init: starts the relays and the app (in a session of its
 * own, so a stop reaches everything it forked), forwards SIGTERM to the app's process group, and exits when
 * the app or any relay exits, taking the sandbox with it (the supervisor then restarts the replica).
 */
export const INIT_SCRIPT = `socat=$1 setsid=$2; shift 2
relays=()
while [ "$1" != -- ]; do "$socat" "$1" "$2" & relays+=($!); shift 2; done
shift
"$setsid" /bin/sh -c "$1" & app=$!
trap 'kill -TERM -- -$app 2>/dev/null' TERM INT
while :; do
  wait -n; st=$?
  kill -0 "$app" 2>/dev/null || exit "$st"
  for r in "\${relays[@]}"; do kill -0 "$r" 2>/dev/null || { echo "allegra: relay exited; stopping the replica" >&2; exit 70; }; done
done`;

/** socat address pairs: the inbound HTTP relay, then one per exposed host socket. */
export function relayAddresses(port: number, exposed: ExposedSocket[] = []): Array<[string, string]> {
  return [
    // backlog: gateways open up to 256 connections at once; socat's default of 5 refuses most of them.
    [`UNIX-LISTEN:${INSIDE.socket},fork,mode=0666,backlog=1024`, `TCP:127.0.0.1:${port}`],
    ...exposed.map((e, i): [string, string] => [
      `TCP-LISTEN:${e.port},bind=127.0.0.1,fork,reuseaddr,backlog=256`,
      `UNIX-CONNECT:${INSIDE.exposed}/${i}/${posix.basename(e.hostPath)}`,
    ]),
  ];
}

export function bwrapArgv(c: SandboxCommand): string[] {
  const a: string[] = [c.tools.bwrap, '--die-with-parent', '--new-session'];
  a.push('--unshare-pid', '--unshare-net', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try');
  if (c.infoFd !== undefined) a.push('--info-fd', String(c.infoFd));
  a.push('--hostname', c.hostname);
  // System, read-only.
  a.push('--ro-bind', '/usr', '/usr');
  for (const t of c.system.topLevel) {
    if (t.symlink) a.push('--symlink', t.symlink, `/${t.name}`);
    else a.push('--ro-bind', `/${t.name}`, `/${t.name}`);
  }
  for (const dir of c.system.extraRo) a.push('--ro-bind', dir, dir);
  a.push('--proc', '/proc', '--dev', '/dev', '--perms', '1777', '--tmpfs', '/tmp');
  a.push('--dir', '/etc');
  // Directories bwrap creates for nested entries (/etc/ssl) would be 0700: unreadable for the replica's uid.
  const parents = new Set(c.system.etc.map((e) => posix.dirname(e)).filter((d) => d !== '/etc'));
  for (const dir of parents) a.push('--perms', '0755', '--dir', dir);
  for (const entry of c.system.etc) a.push('--ro-bind-try', entry, entry);
  a.push('--ro-bind', c.passwdFile, '/etc/passwd', '--ro-bind', c.groupFile, '/etc/group');
  // The replica's own directories.
  a.push('--ro-bind', c.artifactDir, INSIDE.app);
  a.push('--bind', c.dataDir, INSIDE.data);
  if (c.volumeDir) a.push('--bind', c.volumeDir, INSIDE.volume);
  a.push('--perms', '0755', '--dir', '/run', '--bind', c.runDir, INSIDE.run);
  const exposed = c.exposed ?? [];
  if (exposed.length > 0) {
    a.push('--perms', '0755', '--dir', INSIDE.exposed);
    for (const [i, e] of exposed.entries()) a.push('--ro-bind', posix.dirname(e.hostPath), `${INSIDE.exposed}/${i}`);
  }
  a.push('--chdir', INSIDE.app);
  // Inside: drop to the instance's ids for good, then the init script.
  a.push(
    c.tools.setpriv,
    `--reuid=${c.uid}`,
    `--regid=${c.gid}`,
    '--clear-groups',
    '--no-new-privs',
    '--bounding-set=-all',
    '--inh-caps=-all',
    '--',
    c.tools.bash,
    '-c',
    INIT_SCRIPT,
    'allegra-init',
    c.tools.socat,
    c.tools.setsid,
  );
  for (const [from, to] of relayAddresses(c.port, exposed)) a.push(from, to);
  a.push('--', c.cmd);
  return a;
}

/**
 * Joins the replica's cgroups before bwrap exists: `sh` writes its own pid into each cgroup.procs, then
 * becomes bwrap (exec keeps the pid), so every process of the sandbox is born inside its limits.
 */
export function inCgroups(procsFiles: string[], argv: string[]): string[] {
  return [
    '/bin/sh',
    '-c',
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"',
    'allegra-cgroup',
    ...procsFiles,
    '--',
    ...argv,
  ];
}

/** passwd and group files naming only root, the replica's user and nobody. */
export function identityFiles(uid: number, gid: number): { passwd: string; group: string } {
  return {
    passwd: [
      'root:x:0:0:root:/nonexistent:/usr/sbin/nologin',
      `app:x:${uid}:${gid}:allegra replica:${INSIDE.data}:/usr/sbin/nologin`,
      'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
      '',
    ].join('\n'),
    group: ['root:x:0:', `app:x:${gid}:`, 'nogroup:x:65534:', ''].join('\n'),
  };
}
