/**
 * The QEMU command line of one VM replica, as a pure function (what a VM can reach is readable here):
 * - no default devices, no monitor, no display; the serial console on stdout (the replica's log);
 * - the kernel and initramfs of the node's image (image.ts), the seed read-only, the volume read-write;
 * - user-mode networking with `restrict=on`: the guest reaches nothing outside the VM (not the host, not the
 *   internet), and two host-side forwards on loopback only: the app port and the VM's SSH server;
 * - limits: vCPUs (-smp), memory (-m), disk (the volume's size, disk.ts).
 * `-M pc` with virtio-pci rather than `-M microvm`: under TCG the microvm machine has no clock the Debian
 * kernel can calibrate its TSC against (it stops at "tsc: Unable to calibrate against PIT"), while `pc`
 * boots it; with KVM microvm would shave a little more firmware time.
 */
import type { Accel } from './accel.js';

/** Port of the guest-side relay the app port forward lands on (it passes on to 127.0.0.1:$PORT inside). */
export const GUEST_RELAY_PORT = 61080;

export interface QemuOptions {
  accel: Accel;
  vcpus: number;
  memoryMb: number;
  kernel: string;
  initrd: string;
  seedImage: string;
  diskImage: string;
  /** Host loopback ports forwarded to the guest: the app (through the relay) and SSH. */
  appHostPort: number;
  sshHostPort: number;
  binary?: string;
}

export function qemuArgv(o: QemuOptions): string[] {
  const accel = o.accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max'];
  const net = [
    'user',
    'id=net0',
    'restrict=on',
    `hostfwd=tcp:127.0.0.1:${o.appHostPort}-:${GUEST_RELAY_PORT}`,
    `hostfwd=tcp:127.0.0.1:${o.sshHostPort}-:22`,
  ].join(',');
  return [
    o.binary ?? 'qemu-system-x86_64',
    '-M',
    'pc',
    ...accel,
    '-smp',
    String(o.vcpus),
    '-m',
    String(o.memoryMb),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-monitor',
    'none',
    // A guest reboot ends QEMU: the supervisor restarts the replica, with a fresh seed.
    '-no-reboot',
    '-serial',
    'stdio',
    '-kernel',
    o.kernel,
    '-initrd',
    o.initrd,
    '-append',
    // acpi=off: interpreting the firmware's ACPI tables is seconds of a TCG boot, and nothing here needs it
    // (PCI and SMP come from the MP table). quiet: every console line costs under emulation.
    `console=ttyS0 quiet loglevel=3 acpi=off panic=-1 reboot=t rdinit=/init`,
    '-drive',
    `id=seed,file=${o.seedImage},format=raw,if=none,readonly=on`,
    '-device',
    'virtio-blk-pci,drive=seed',
    '-drive',
    `id=data,file=${o.diskImage},format=raw,if=none,cache=writeback,discard=unmap`,
    '-device',
    'virtio-blk-pci,drive=data',
    '-netdev',
    net,
    '-device',
    'virtio-net-pci,netdev=net0',
  ];
}
