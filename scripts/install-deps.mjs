#!/usr/bin/env node
// Installs the Debian packages the tests and benchmarks need, when missing.
// As root it runs apt-get; otherwise it prints exactly what to install and, under CI=true, fails.
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';

/** binary → Debian package that provides it */
const NEEDED = {
  curl: 'curl',
  etcd: 'etcd-server',
  etcdctl: 'etcd-client',
  pebble: 'pebble',
  'pebble-challtestsrv': 'pebble',
  nginx: 'nginx-light',
  haproxy: 'haproxy',
  wrk: 'wrk',
  h2load: 'nghttp2-client',
  openssl: 'openssl',
  taskset: 'util-linux',
  setpriv: 'util-linux',
  // Multi-machine tests: network namespaces, veth, bridges; offload settings for the lab's impairment bridge.
  ip: 'iproute2',
  ethtool: 'ethtool',
  ping: 'iputils-ping',
  python3: 'python3',
  setsid: 'util-linux',
  // The replica sandbox: namespaces and the relay socket of each replica.
  bwrap: 'bubblewrap',
  socat: 'socat',
  // SSH into replicas: sessions enter the sandbox (nsenter); sftp runs Debian's server inside it; the tests
  // drive a plain OpenSSH client (ssh, sftp) through a PTY (script).
  nsenter: 'util-linux',
  '/usr/lib/openssh/sftp-server': 'openssh-sftp-server',
  ssh: 'openssh-client',
  sftp: 'openssh-client',
  script: 'bsdutils',
  // The UI's browser tests drive Debian's Chromium (playwright-core, no browser download).
  chromium: 'chromium',
  // The vm driver: QEMU, and what its image is built from (quorum-agent/vm/image.ts): busybox as the
  // userland, dropbear as the VM's SSH server (and dropbearkey for its host key), cpio for the initramfs,
  // e2fsprogs for the seed and volume disks. The kernel is checked below (a file, not a command).
  'qemu-system-x86_64': 'qemu-system-x86',
  '/bin/busybox': 'busybox-static',
  '/usr/sbin/dropbear': 'dropbear-bin',
  dropbearkey: 'dropbear-bin',
  cpio: 'cpio',
  mke2fs: 'e2fsprogs',
  resize2fs: 'e2fsprogs',
};

/** Files (not commands) → the Debian package that provides them. */
const NEEDED_FILES = {
  // The VM image's kernel and modules: any installed Debian kernel will do.
  '/boot': { test: (names) => names.some((f) => /^vmlinuz-\d/.test(f)), pkg: 'linux-image-amd64' },
};

const SEARCH_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin:/usr/local/sbin`;

function has(bin) {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { env: { ...process.env, PATH: SEARCH_PATH } }).status === 0;
}

function hasFiles(dir, test) {
  try {
    return test(readdirSync(dir));
  } catch {
    return false;
  }
}

const missing = [
  ...new Set([
    ...Object.entries(NEEDED)
      .filter(([bin]) => !has(bin))
      .map(([, pkg]) => pkg),
    ...Object.entries(NEEDED_FILES)
      .filter(([dir, { test }]) => !hasFiles(dir, test))
      .map(([, { pkg }]) => pkg),
  ]),
];
if (missing.length === 0) process.exit(0);

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
if (!isRoot) {
  const msg = `missing Debian packages: ${missing.join(' ')}\n  install them with: sudo apt-get install -y ${missing.join(' ')}`;
  console.error(msg);
  process.exit(process.env.CI === 'true' ? 1 : 0);
}

console.error(`installing Debian packages: ${missing.join(' ')}`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
const run = (args) => execFileSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env });
try {
  run(['install', '-y', '-qq', '--no-install-recommends', ...missing]);
} catch {
  run(['update', '-qq']);
  run(['install', '-y', '-qq', '--no-install-recommends', ...missing]);
}
// Debian starts services on install where it can; tests start their own instances on their own ports.
for (const svc of ['nginx', 'haproxy', 'etcd']) spawnSync('sh', ['-c', `service ${svc} stop >/dev/null 2>&1 || true`]);
