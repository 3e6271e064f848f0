/**
 * The `vm` driver: every replica is a QEMU virtual machine booted from the node's image (vm/image.ts), with
 * a fresh seed per boot (vm/seed.ts: keys, app, command, environment), the instance's volume as its disk
 * (vm/disk.ts), and two loopback forwards: the app (the replica's endpoint, as the gateway and the node
 * ingress reach any replica) and the VM's own SSH server (dropbear), which the agent relays `allegra ssh`
 * sessions to (vm/guest-ssh.ts). KVM where the host really has it, else TCG (vm/accel.ts), reported with
 * each replica. QEMU gets a parent-death signal (setpriv), so no VM outlives its agent.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { openSshPrivateKey, sshPublicKeyLine } from '../../protocol/openssh.js';
import { effectiveLimits, REPLICA_LIMITS } from '../../protocol/schemas.js';
import type { KeyPair } from '../../protocol/signing.js';
import type { ReplicaLimits } from '../../protocol/types.js';
import { attachLog } from '../logs.js';
import { freePorts } from '../ports.js';
import { replicaEnv } from '../sandbox/env.js';
import type { AccelDecision } from '../vm/accel.js';
import { ensureDisk } from '../vm/disk.js';
import { type GuestCommand, type GuestSshTarget, guestExec } from '../vm/guest-ssh.js';
import { ensureHostKey } from '../vm/host-key.js';
import { type BuiltImage, buildImage } from '../vm/image.js';
import { GUEST_RELAY_PORT, qemuArgv } from '../vm/qemu.js';
import { writeSeed } from '../vm/seed.js';
import { freeze } from '../volume/freeze.js';
import type { VolumeTuning } from '../volume/volume.js';
import type { Driver, ExitInfo, ReplicaHandle, ReplicaLaunch } from './driver.js';
import { probeHealth } from './health-probe.js';
import { DEFAULT_APP_PORT } from './process.js';

/** Below this the image does not boot: its initramfs (~110 MB, mostly node) is unpacked into the guest's RAM. */
export const VM_MIN_MEMORY_MB = 384;

export interface VmLimits {
  vcpus: number;
  memoryMb: number;
  diskMb: number;
}

export function vmLimits(limits: ReplicaLimits | undefined): VmLimits {
  return {
    vcpus: limits?.vcpus ?? REPLICA_LIMITS.vcpus.default,
    memoryMb: Math.max(effectiveLimits(limits).memoryMb, VM_MIN_MEMORY_MB),
    diskMb: limits?.diskMb ?? REPLICA_LIMITS.diskMb.default,
  };
}

/** Room in a vm volume beyond the disk itself: the VM's SSH host key. */
const VOLUME_SLACK_BYTES = 16 * 1024 * 1024;
/**
 * How often a running VM's changed disk is captured. Each capture pauses the VM while the image is copied
 * (holes skipped) and then reads the whole copy (bench/RESULTS.md, "VM disk": tens of ms paused, a few
 * hundred of CPU for a 1 GiB disk), so it runs less often than a directory volume's: the RPO is about this
 * plus the guest's own 1 s journal commit.
 */
export const VM_VOLUME_INTERVAL_MS = 2_000;
/** A VM's stop: `sync` in the guest (up to 3 s), then QEMU's own exit. */
export const VM_STOP_GRACE_MS = 5_000;

/** How the volume of a vm instance differs from a directory volume: one image of the disk's size. */
export function vmVolumeTuning(limits: ReplicaLimits | undefined): Partial<VolumeTuning> {
  const { diskMb } = vmLimits(limits);
  return {
    limits: { maxBytes: diskMb * 1024 * 1024 + VOLUME_SLACK_BYTES, maxEntries: 16 },
    intervalMs: VM_VOLUME_INTERVAL_MS,
    stepDownMs: VM_STOP_GRACE_MS * 3,
    pauseOn: 'any',
    stage: true,
  };
}

export interface VmDriverOptions {
  /** Where volumes, host keys and seeds live (`<agent data>/vm`). */
  dir: string;
  /** The image cache; agents on one machine may share one (default `<dir>/images`). */
  imagesDir?: string;
  /** The node's key: the seed authorizes it, and the agent relays SSH sessions into VMs with it. */
  nodeKey: KeyPair;
  accel: AccelDecision;
  log: Logger;
  healthPath?: string;
  healthTimeoutMs?: number;
  /** The QEMU binary (tests may point elsewhere); `qemu-system-x86_64` on PATH by default. */
  qemu?: string;
}

/** What the agent's SSH server needs to relay a session into a VM replica. */
export interface VmHandle extends ReplicaHandle {
  readonly accel: AccelDecision['accel'];
  /** The VM's SSH server, logged into as root with the node's key. */
  guestSsh(): GuestSshTarget;
  /** Runs a command in the VM over its SSH server. */
  exec(req: { argv: string[]; env?: Record<string, string> }): Promise<GuestCommand>;
}

export class VmDriver implements Driver {
  readonly name = 'vm' as const;
  private image: Promise<BuiltImage> | null = null;

  constructor(private readonly opts: VmDriverOptions) {}

  /** The node's image, built on first use (a few seconds) and cached on disk across agent restarts. */
  ensureImage(): Promise<BuiltImage> {
    if (!this.image) {
      const started = Date.now();
      this.image = buildImage(this.opts.imagesDir ?? join(this.opts.dir, 'images')).then(
        (img) => {
          this.opts.log.info({ image: img.id, kernel: img.release, ms: Date.now() - started }, 'vm image ready');
          return img;
        },
        (err) => {
          this.image = null; // a later start tries again (e.g. after the operator installed a package)
          throw err;
        },
      );
    }
    return this.image;
  }

  private replicaDir(instanceId: string, slot: number): string {
    return join(this.opts.dir, 'instances', instanceId, String(slot));
  }

  /** The VM of each instance slot still running (its disk has one writer), by `instanceId/slot`. */
  private readonly running = new Map<string, Promise<ExitInfo>>();

  async start(launch: ReplicaLaunch): Promise<VmHandle> {
    const image = await this.ensureImage();
    // A new version of a slot starts beside the old one elsewhere (make-before-break); a VM cannot: both
    // would write one volume (QEMU refuses the second). It waits (bounded) for the old VM, which the
    // supervisor stops once its rollout deadline passes.
    const slotKey = `${launch.instanceId}/${launch.slot}`;
    const previous = this.running.get(slotKey);
    if (previous) {
      const gone = await Promise.race([
        previous.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 120_000).unref()),
      ]);
      if (!gone) throw new Error(`the VM of replica ${launch.slot} is still running and holds its disk`);
    }
    const limits = vmLimits(launch.limits);
    const dir = this.replicaDir(launch.instanceId, launch.slot);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    mkdirSync(dirname(launch.logFile), { recursive: true });
    // The disk and the host key belong to the instance's volume when it has one (its writer's live
    // directory, replicated to every member); the seed is made fresh per boot, beside the replica.
    const diskDir = launch.volumeDir ?? dir;
    const diskImage = join(diskDir, 'disk.img');
    ensureDisk(diskImage, limits.diskMb, dir);
    const hostKey = ensureHostKey(join(diskDir, 'ssh_host_ed25519_key'), dir);
    const port = launch.listenPort || DEFAULT_APP_PORT;
    const env = {
      ...replicaEnv({
        env: launch.env,
        port,
        instanceName: launch.instanceName,
        instanceId: launch.instanceId,
        slot: launch.slot,
        dataDir: '/data',
        path: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin',
      }),
      ALLEGRA_VM_RELAY_PORT: String(GUEST_RELAY_PORT),
    };
    const keys = [launch.owner, ...(launch.authorizedKeys ?? [])].map((k) => sshPublicKeyLine(k, 'allegra'));
    keys.push(sshPublicKeyLine(this.opts.nodeKey.publicKeyHex, 'allegra-node'));
    const seedImage = join(dir, 'seed.img');
    writeSeed(seedImage, join(dir, 'seed.staging'), {
      hostname: `${launch.instanceName}-${launch.slot}`.slice(0, 63),
      authorizedKeys: [...new Set(keys)],
      hostKeyFile: hostKey.file,
      appDir: launch.workDir,
      cmd: launch.cmd,
      env,
    });
    const [appHostPort, sshHostPort] = (await freePorts(2)) as [number, number];
    const argv = [
      'setpriv',
      '--pdeathsig',
      'KILL',
      '--',
      ...qemuArgv({
        accel: this.opts.accel.accel,
        vcpus: limits.vcpus,
        memoryMb: limits.memoryMb,
        kernel: image.kernel,
        initrd: image.initrd,
        seedImage,
        diskImage,
        appHostPort,
        sshHostPort,
        ...(this.opts.qemu ? { binary: this.opts.qemu } : {}),
      }),
    ];
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '' } });
    attachLog(launch.logFile, child.stdout, child.stderr);
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    let done = false;
    this.running.set(slotKey, exited);
    void exited.then(() => {
      done = true;
      if (this.running.get(slotKey) === exited) this.running.delete(slotKey);
    });
    this.opts.log.info(
      { instance: launch.instanceName, slot: launch.slot, accel: this.opts.accel.accel, ...limits, app: appHostPort, ssh: sshHostPort },
      'vm starting',
    );
    const endpoint = `http://127.0.0.1:${appHostPort}`;
    const target: GuestSshTarget = {
      host: '127.0.0.1',
      port: sshHostPort,
      username: 'root',
      privateKey: openSshPrivateKey(this.opts.nodeKey, 'allegra-node'),
      hostKeyHex: hostKey.publicKeyHex,
    };
    const timeout = this.opts.healthTimeoutMs ?? 1_000;
    const signal = (sig: NodeJS.Signals) => {
      if (done) return;
      try {
        child.kill(sig);
      } catch {
        /* gone */
      }
    };
    return {
      endpoint,
      pid: child.pid ?? null,
      exited,
      accel: this.opts.accel.accel,
      // A boot under TCG on a busy host takes tens of seconds; under KVM a few.
      startupMs: this.opts.accel.accel === 'tcg' ? 180_000 : 30_000,
      guestSsh: () => target,
      // A crash-consistent instant of the disk for its snapshot: every QEMU thread stopped, so no write is
      // half done (what the guest flushed is in the image file; what it had not is what a power cut loses).
      pause: () => freeze(() => (done || !child.pid ? [] : [child.pid])),
      // The replica's environment (the seed's), then the session's own variables except the network's.
      exec: (req) => {
        const own = Object.entries(req.env ?? {})
          .filter(([k]) => !k.startsWith('ALLEGRA_') && k !== 'PORT' && k !== 'HOST' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
          .map(([k, v]) => `${k}=${v}`);
        return guestExec(target, ['sh', '-c', '. /seed/env; exec env "$@"', 'allegra-exec', ...own, ...req.argv]);
      },
      health: async () => !done && (await probeHealth({ url: endpoint }, this.opts.healthPath ?? '/', timeout)),
      stop: async (graceMs = 5_000) => {
        if (done) return;
        // The guest's page cache first (bounded): what the app wrote reaches the volume before QEMU ends.
        await syncGuest(target, Math.min(graceMs, 3_000));
        signal('SIGTERM');
        const timer = setTimeout(() => signal('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      },
    };
  }

  /** A volume's standby member builds the image ahead, so taking over costs only the restore and the boot. */
  async prepare(): Promise<void> {
    await this.ensureImage();
  }

  /** Instances this driver kept something for in an earlier run (so one deleted meanwhile is released). */
  hosted(): string[] {
    try {
      return readdirSync(join(this.opts.dir, 'instances'));
    } catch {
      return [];
    }
  }

  /** The instance left this node: its seeds (and disks made without a volume) go; the image stays for others. */
  async destroy(instanceId: string): Promise<void> {
    rmSync(join(this.opts.dir, 'instances', instanceId), { recursive: true, force: true });
  }
}

/** `sync` in the guest over SSH, given at most `ms`; a VM that does not answer is stopped anyway. */
async function syncGuest(target: GuestSshTarget, ms: number): Promise<void> {
  let cmd: GuestCommand | undefined;
  const timer = new Promise<void>((resolve) => setTimeout(resolve, ms).unref());
  try {
    await Promise.race([
      (async () => {
        cmd = await guestExec(target, ['sync']);
        cmd.stdin.end();
        cmd.stdout.resume();
        cmd.stderr.resume();
        await cmd.exited;
      })(),
      timer,
    ]);
  } catch {
    /* not reachable: stopped without */
  } finally {
    cmd?.kill();
  }
}
