import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { vmLimits } from '../../../quorum-agent/drivers/vm.js';
import { chooseAccel } from '../../../quorum-agent/vm/accel.js';
import { shellWord } from '../../../quorum-agent/vm/guest-ssh.js';
import { moduleClosure } from '../../../quorum-agent/vm/image.js';
import { GUEST_RELAY_PORT, qemuArgv } from '../../../quorum-agent/vm/qemu.js';
import { envFile, shQuote } from '../../../quorum-agent/vm/seed.js';

const facts = (o: { kvm: boolean; flags: string[]; pvm?: boolean }) => ({
  kvmDevice: o.kvm,
  cpuFlags: new Set(o.flags),
  paravirtualKvm: o.pvm ?? false,
});

describe('accelerator choice', () => {
  it('uses KVM only with /dev/kvm and hardware virtualization', () => {
    expect(chooseAccel(facts({ kvm: true, flags: ['fpu', 'vmx'] })).accel).toBe('kvm');
    expect(chooseAccel(facts({ kvm: true, flags: ['svm'] })).accel).toBe('kvm');
    expect(chooseAccel(facts({ kvm: false, flags: ['vmx'] })).accel).toBe('tcg');
  });

  it('falls back to TCG on a paravirtual /dev/kvm (kvm_pvm, no vmx/svm), and says why', () => {
    const d = chooseAccel(facts({ kvm: true, flags: ['fpu', 'sse2'], pvm: true }));
    expect(d.accel).toBe('tcg');
    expect(d.reason).toMatch(/paravirtual \(kvm_pvm\)/);
  });

  it('honours the operator: tcg always, kvm only with a device', () => {
    expect(chooseAccel(facts({ kvm: true, flags: ['vmx'] }), 'tcg').accel).toBe('tcg');
    expect(chooseAccel(facts({ kvm: true, flags: [] }), 'kvm').accel).toBe('kvm');
    expect(() => chooseAccel(facts({ kvm: false, flags: ['vmx'] }), 'kvm')).toThrow(/\/dev\/kvm/);
  });
});

describe('module closure', () => {
  const dep = [
    'kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko',
    'kernel/fs/jbd2/jbd2.ko:',
    'kernel/fs/mbcache.ko:',
    'kernel/lib/crc16.ko:',
    'kernel/drivers/virtio/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
    'kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko',
    'kernel/drivers/virtio/virtio_ring.ko:',
  ].join('\n');

  it('puts dependencies before what needs them, each once; built-in modules need nothing', () => {
    const order = moduleClosure(dep, ['virtio_blk', 'ext4', 'virtio_mmio_builtin']);
    expect(order).toEqual([
      'kernel/drivers/virtio/virtio_ring.ko',
      'kernel/drivers/virtio/virtio.ko',
      'kernel/drivers/virtio/virtio_blk.ko',
      'kernel/lib/crc16.ko',
      'kernel/fs/mbcache.ko',
      'kernel/fs/jbd2/jbd2.ko',
      'kernel/fs/ext4/ext4.ko',
    ]);
  });
});

describe('seed environment', () => {
  it('quotes values so the guest shell reads them back exactly', () => {
    const env = { A: "it's", B: 'x; rm -rf / $(id) `id`', C: 'line\nbreak' };
    const file = envFile(env);
    const back = execFileSync('sh', ['-c', `${file}printf '%s|' "$A" "$B" "$C"`], { encoding: 'utf8' });
    expect(back).toBe(`${env.A}|${env.B}|${env.C}|`);
    expect(shQuote("'")).toBe(`''\\'''`);
  });

  it('refuses names a shell cannot export', () => {
    expect(() => envFile({ 'A-B': '1' })).toThrow(/cannot be exported/);
    expect(() => envFile({ 'A;id': '1' })).toThrow(/cannot be exported/);
  });

  it('quotes command words for the guest shell', () => {
    const words = ['echo', "it's", 'a b', '$HOME', 'plain-word_1.2'];
    const back = execFileSync('sh', ['-c', `printf '%s|' ${words.slice(1).map(shellWord).join(' ')}`], { encoding: 'utf8' });
    expect(back).toBe(`${words.slice(1).join('|')}|`);
  });
});

describe('QEMU command line', () => {
  const base = {
    kernel: '/k',
    initrd: '/i',
    seedImage: '/s.img',
    diskImage: '/d.img',
    appHostPort: 41000,
    sshHostPort: 41001,
    vcpus: 2,
    memoryMb: 768,
  };

  it('isolates the guest network and forwards only loopback ports', () => {
    const argv = qemuArgv({ ...base, accel: 'tcg' });
    const net = argv[argv.indexOf('-netdev') + 1] as string;
    expect(net.split(',')).toEqual([
      'user',
      'id=net0',
      'restrict=on',
      `hostfwd=tcp:127.0.0.1:41000-:${GUEST_RELAY_PORT}`,
      'hostfwd=tcp:127.0.0.1:41001-:22',
    ]);
    expect(argv).toContain('-nodefaults');
    expect(argv[argv.indexOf('-monitor') + 1]).toBe('none');
  });

  it('applies the limits and the accelerator; the seed is read-only', () => {
    const tcg = qemuArgv({ ...base, accel: 'tcg' });
    expect(tcg[tcg.indexOf('-smp') + 1]).toBe('2');
    expect(tcg[tcg.indexOf('-m') + 1]).toBe('768');
    expect(tcg[tcg.indexOf('-accel') + 1]).toMatch(/^tcg/);
    expect(tcg).toContain('id=seed,file=/s.img,format=raw,if=none,readonly=on');
    const kvm = qemuArgv({ ...base, accel: 'kvm' });
    expect(kvm[kvm.indexOf('-accel') + 1]).toBe('kvm');
  });

  it('limits: defaults, and memory no lower than the image needs', () => {
    expect(vmLimits(undefined)).toEqual({ vcpus: 1, memoryMb: 512, diskMb: 1024 });
    expect(vmLimits({ memoryMb: 64, vcpus: 4, diskMb: 2048 })).toEqual({ vcpus: 4, memoryMb: 384, diskMb: 2048 });
  });
});
