/**
 * Which QEMU accelerator a VM replica gets. KVM only where it can run a stock kernel: /dev/kvm must be
 * usable AND the CPU must offer hardware virtualization (vmx/svm). Some cloud guests expose a paravirtual
 * /dev/kvm (the `kvm_pvm` module) without either flag; QEMU's KVM mode hangs booting a Debian kernel there
 * (see ENVIRONMENT-NOTES.md), so such hosts use TCG, QEMU's software emulator: slower, but it boots.
 */
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';

export type Accel = 'kvm' | 'tcg';
export type AccelChoice = Accel | 'auto';

export interface AccelDecision {
  accel: Accel;
  /** Why this one, for the agent's log and `allegra status`. */
  reason: string;
}

export interface HostFacts {
  kvmDevice: boolean;
  cpuFlags: Set<string>;
  paravirtualKvm: boolean;
}

export function hostFacts(): HostFacts {
  let kvmDevice = false;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    kvmDevice = true;
  } catch {
    /* absent or not ours */
  }
  let flags = '';
  try {
    flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  } catch {
    /* not Linux */
  }
  return { kvmDevice, cpuFlags: new Set(flags.trim().split(/\s+/)), paravirtualKvm: existsSync('/sys/module/kvm_pvm') };
}

/** Pure: the decision from the host's facts and the operator's choice (`--vm-accel`). */
export function chooseAccel(facts: HostFacts, choice: AccelChoice = 'auto'): AccelDecision {
  if (choice === 'tcg') return { accel: 'tcg', reason: 'TCG chosen by the operator' };
  const hardware = facts.cpuFlags.has('vmx') || facts.cpuFlags.has('svm');
  if (choice === 'kvm') {
    if (!facts.kvmDevice) throw new Error('--vm-accel kvm: /dev/kvm is missing or not accessible');
    return { accel: 'kvm', reason: 'KVM chosen by the operator' };
  }
  if (!facts.kvmDevice) return { accel: 'tcg', reason: 'no usable /dev/kvm: TCG (software emulation)' };
  if (!hardware)
    return {
      accel: 'tcg',
      reason: facts.paravirtualKvm
        ? '/dev/kvm is paravirtual (kvm_pvm) without vmx/svm, where QEMU KVM hangs: TCG (software emulation)'
        : '/dev/kvm without vmx/svm in the CPU flags: TCG (software emulation)',
    };
  return { accel: 'kvm', reason: 'KVM (hardware virtualization)' };
}
