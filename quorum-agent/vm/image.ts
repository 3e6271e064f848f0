/**
 * The base image of every VM replica on this node, built offline from what Debian installed on the host
 * (scripts/install-deps.mjs): the kernel of `linux-image-amd64`, the few modules a virtio microVM needs,
 * `busybox-static` as the userland, `dropbear-bin` as the SSH server, and the host's own `node` (so the
 * usual `node server.js` app runs unchanged). Everything goes into one uncompressed initramfs (cpio newc):
 * nothing to decompress under TCG, no root disk to find. Built once per agent into `<dir>/<hash>/` and
 * reused while its inputs (kernel, binaries, this recipe) stay the same.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { GUEST_INIT, GUEST_RELAY } from './guest-init.js';

/** Modules loaded at boot, in this order (their dependencies are added before them from modules.dep). */
export const GUEST_MODULES = ['virtio_pci', 'virtio_mmio', 'virtio_blk', 'virtio_net', 'crc32c_generic', 'ext4'];

/** Bumped whenever what goes into the image changes in a way its inputs' hash does not show. */
const RECIPE = 1;

export interface ImageInputs {
  kernel: string;
  modulesDir: string;
  busybox: string;
  dropbear: string;
  node: string;
  /** OpenSSH's SFTP server (Debian openssh-sftp-server), where dropbear runs it from; optional. */
  sftpServer?: string;
}

export interface BuiltImage {
  kernel: string;
  initrd: string;
  /** The hash naming this build (inputs and recipe). */
  id: string;
  /** The kernel release, as `uname -r` says inside the VM. */
  release: string;
}

/** The newest Debian kernel installed on the host and the binaries the image needs; throws with what is missing. */
export function findInputs(): ImageInputs {
  const kernels = existsSync('/boot') ? readdirSync('/boot').filter((f) => /^vmlinuz-\d/.test(f)) : [];
  const newest = kernels.sort(compareRelease).at(-1);
  const missing: string[] = [];
  if (!newest) missing.push('a kernel in /boot (Debian linux-image-amd64)');
  const release = newest?.slice('vmlinuz-'.length) ?? '';
  const modulesDir = `/lib/modules/${release}`;
  if (newest && !existsSync(join(modulesDir, 'modules.dep'))) missing.push(`${modulesDir}/modules.dep (linux-image-amd64)`);
  const busybox = '/bin/busybox';
  const dropbear = '/usr/sbin/dropbear';
  if (!existsSync(busybox)) missing.push('/bin/busybox (busybox-static)');
  if (!existsSync(dropbear)) missing.push('/usr/sbin/dropbear (dropbear-bin)');
  if (missing.length > 0) throw new Error(`cannot build the VM image: missing ${missing.join(', ')}`);
  const sftp = '/usr/lib/openssh/sftp-server';
  return {
    kernel: `/boot/${newest}`,
    modulesDir,
    busybox,
    dropbear,
    node: process.execPath,
    ...(existsSync(sftp) ? { sftpServer: sftp } : {}),
  };
}

function compareRelease(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** Shared libraries a dynamically linked binary loads (ldd), with the loader itself. */
export function sharedLibraries(binary: string): string[] {
  let out: string;
  try {
    out = execFileSync('ldd', [binary], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return []; // "not a dynamic executable"
  }
  const libs = new Set<string>();
  for (const line of out.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1]) libs.add(m[1]);
  }
  return [...libs];
}

/** `wanted` and their dependencies from modules.dep, dependencies first, each once. */
export function moduleClosure(modulesDep: string, wanted: string[]): string[] {
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of modulesDep.split('\n')) {
    const [mod, rest] = line.split(':');
    if (!mod || rest === undefined) continue;
    deps.set(mod, rest.trim().split(/\s+/).filter(Boolean));
    byName.set(
      basename(mod)
        .replace(/\.ko(\.\w+)?$/, '')
        .replace(/-/g, '_'),
      mod,
    );
  }
  const order: string[] = [];
  const visit = (path: string) => {
    if (order.includes(path)) return;
    for (const dep of deps.get(path) ?? []) visit(dep);
    order.push(path);
  };
  for (const name of wanted) {
    const path = byName.get(name.replace(/-/g, '_'));
    // A module built into this kernel is not in modules.dep and needs no loading.
    if (path) visit(path);
  }
  return order;
}

function hashInputs(inputs: ImageInputs, files: string[]): string {
  const h = createHash('sha256');
  h.update(`recipe ${RECIPE}\n${GUEST_INIT}\n${GUEST_RELAY}\n`);
  for (const f of [inputs.kernel, ...files]) {
    const st = statSync(f);
    h.update(`${f} ${st.size} ${st.mtimeMs}\n`);
  }
  return h.digest('hex').slice(0, 16);
}

/**
 * Builds the image under `cacheDir` unless a build of the same inputs is there. Safe against a crash
 * midway (built in a temporary directory and renamed into place) and cheap when cached (a few stats).
 */
export async function buildImage(cacheDir: string, inputs: ImageInputs = findInputs()): Promise<BuiltImage> {
  const release = basename(inputs.kernel).slice('vmlinuz-'.length);
  const modules = moduleClosure(readFileSync(join(inputs.modulesDir, 'modules.dep'), 'utf8'), GUEST_MODULES);
  const binaries = [inputs.busybox, inputs.dropbear, inputs.node, ...(inputs.sftpServer ? [inputs.sftpServer] : [])];
  const libs = [...new Set(binaries.flatMap(sharedLibraries))];
  const id = hashInputs(inputs, [...binaries, ...libs, ...modules.map((m) => join(inputs.modulesDir, m))]);
  const dir = join(cacheDir, id);
  const built: BuiltImage = { kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.cpio'), id, release };
  if (existsSync(built.initrd) && existsSync(built.kernel)) return built;

  mkdirSync(cacheDir, { recursive: true });
  const tmp = join(cacheDir, `.build-${process.pid}-${Date.now()}`);
  const root = join(tmp, 'root');
  try {
    for (const d of [
      'bin',
      'sbin',
      'etc',
      'proc',
      'sys',
      'dev',
      'tmp',
      'run',
      'root/.ssh',
      'seed',
      'data',
      'app',
      'lib/modules',
      'var/log',
    ])
      mkdirSync(join(root, d), { recursive: true });
    const put = (src: string, dest: string, mode?: number) => {
      mkdirSync(dirname(join(root, dest)), { recursive: true });
      copyFileSync(src, join(root, dest));
      if (mode !== undefined) chmodSync(join(root, dest), mode);
    };
    put(inputs.busybox, 'bin/busybox', 0o755);
    put(inputs.dropbear, 'usr/sbin/dropbear', 0o755);
    put(inputs.node, 'usr/bin/node', 0o755);
    // dropbear (Debian's build) starts the SFTP subsystem from this path.
    if (inputs.sftpServer) put(inputs.sftpServer, 'usr/lib/sftp-server', 0o755);
    // Libraries keep their host paths, which is where the binaries' loader looks for them.
    for (const lib of libs) put(lib, lib.replace(/^\//, ''), 0o755);
    const order: string[] = [];
    for (const m of modules) {
      const name = basename(m);
      put(join(inputs.modulesDir, m), `lib/modules/${name}`, 0o644);
      order.push(name);
    }
    writeFileSync(join(root, 'lib/modules/order'), `${order.join('\n')}\n`);
    writeFileSync(join(root, 'init'), GUEST_INIT, { mode: 0o755 });
    mkdirSync(join(root, 'usr/lib/allegra'), { recursive: true });
    writeFileSync(join(root, 'usr/lib/allegra/relay.cjs'), GUEST_RELAY);
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/data:/bin/sh\n');
    writeFileSync(join(root, 'etc/group'), 'root:x:0:\napp:x:1000:\n');
    // dropbear refuses logins whose shell is not listed here.
    writeFileSync(join(root, 'etc/shells'), '/bin/sh\n');
    writeFileSync(join(root, 'etc/hosts'), '127.0.0.1 localhost\n');
    chmodSync(join(root, 'root'), 0o700);
    chmodSync(join(root, 'tmp'), 0o1777);
    // GNU cpio (Debian `cpio`) packs the tree; owners become root, which is who the guest runs as.
    const listing = execFileSync('find', ['.', '-mindepth', '1'], { cwd: root, encoding: 'utf8' });
    await packCpio(root, listing, join(tmp, 'initrd.cpio'));
    copyFileSync(inputs.kernel, join(tmp, 'vmlinuz'));
    rmSync(root, { recursive: true, force: true });
    writeFileSync(join(tmp, 'image.json'), `${JSON.stringify({ id, release, kernel: inputs.kernel, modules: order, libs }, null, 2)}\n`);
    // Agents sharing one cache may build at once: a complete image already in place (another agent's, from
    // the same inputs) is kept, since a VM may be booting from it; only a partial one is replaced.
    if (!existsSync(join(dir, 'image.json'))) {
      rmSync(dir, { recursive: true, force: true });
      renameSync(tmp, dir);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return built;
}

/** `cpio -o -H newc` of the files in `listing` (relative to `root`) into `out`, without blocking the agent. */
async function packCpio(root: string, listing: string, out: string): Promise<void> {
  const child = spawn('cpio', ['-o', '-H', 'newc', '-R', '0:0', '--quiet'], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  child.stdin.end(listing);
  await pipeline(child.stdout, createWriteStream(out));
  const code = await exited;
  if (code !== 0) throw new Error(`cpio failed (${code}): ${stderr.trim()}`);
}
