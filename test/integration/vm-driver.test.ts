/**
 * The vm driver on its own, with real QEMU (TCG here) and the real image built from the host's Debian
 * packages: one VM boot shared by the cases. It serves the demo app on its endpoint, runs commands over its
 * own SSH server (the kernel is the image's), keeps the volume across a stop and a new boot, and reports a
 * killed QEMU as an exit.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../protocol/signing.js';
import { VmDriver, type VmHandle } from '../../quorum-agent/drivers/vm.js';
import { chooseAccel, hostFacts } from '../../quorum-agent/vm/accel.js';
import type { GuestCommand } from '../../quorum-agent/vm/guest-ssh.js';
import { findInputs } from '../../quorum-agent/vm/image.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

/** The boot under TCG on a loaded 2-core machine: bounded, but generous. */
const BOOT_MS = 180_000;

async function run(cmd: GuestCommand): Promise<{ code: number | null; out: string }> {
  let out = '';
  cmd.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  cmd.stderr.resume();
  cmd.stdin.end();
  const { code } = await cmd.exited;
  return { code, out };
}

describe('vm driver (QEMU)', () => {
  const tmp = tempDir('allegra-vm-');
  const nodeKey = generateKeyPair();
  const owner = generateKeyPair();
  const accel = chooseAccel(hostFacts());
  const driver = new VmDriver({ dir: join(tmp.path, 'vm'), nodeKey, accel, log: pino({ level: 'silent' }) });
  const launch = {
    instanceId: 'vmtest0001',
    instanceName: 'vmtest',
    owner: owner.publicKeyHex,
    slot: 0,
    workDir: join(import.meta.dirname, '../../examples/demo'),
    cmd: 'node server.mjs',
    env: { GREETING: "it's a VM" },
    listenPort: 0,
    logFile: join(tmp.path, 'logs', 'replica-0.log'),
  };
  let vm: VmHandle | undefined;

  beforeAll(async () => {
    vm = await driver.start(launch);
    await waitFor(() => vm?.health(), { timeoutMs: BOOT_MS, intervalMs: 500, what: 'the VM app to answer' });
  }, BOOT_MS + 60_000);

  afterAll(async () => {
    await vm?.stop(1_000);
    tmp.cleanup();
  });

  it('serves the app on its loopback endpoint, with the instance environment', async () => {
    expect(vm?.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await request(`${vm?.endpoint}/`);
    const body = (await res.body.json()) as { instance: string; replica: string; host: string };
    expect(res.statusCode).toBe(200);
    expect(body).toMatchObject({ instance: 'vmtest', replica: '0', host: 'vmtest-0' });
    // The console is the replica's log.
    expect(readFileSync(launch.logFile, 'utf8')).toContain('allegra-vm: app starting on port 3000');
  });

  it('runs commands over its own SSH server: the kernel is the image’s, the env the instance’s', async () => {
    const handle = vm as VmHandle;
    const uname = await run(await handle.exec({ argv: ['uname', '-r'] }));
    expect(uname).toEqual({ code: 0, out: `${findInputs().kernel.replace(/^.*vmlinuz-/, '')}\n` });
    const greeting = await run(await handle.exec({ argv: ['sh', '-c', '. /seed/env; echo "$GREETING"; exit 3'] }));
    expect(greeting).toEqual({ code: 3, out: "it's a VM\n" });
    expect(handle.accel).toBe(accel.accel);
  });

  it(
    'keeps the volume across a stop and a new boot, and reports a killed QEMU as an exit',
    async () => {
      const first = vm as VmHandle;
      const token = `kept-${Date.now()}`;
      expect((await run(await first.exec({ argv: ['sh', '-c', `echo ${token} > /data/token`] }))).code).toBe(0);
      await first.stop(5_000);
      expect(await first.health()).toBe(false);
      vm = await driver.start(launch);
      const second = vm;
      await waitFor(() => second.health(), { timeoutMs: BOOT_MS, intervalMs: 500, what: 'the second boot' });
      expect(await run(await second.exec({ argv: ['cat', '/data/token'] }))).toEqual({ code: 0, out: `${token}\n` });
      process.kill(second.pid as number, 'SIGKILL');
      const exit = await second.exited;
      expect(exit.signal).toBe('SIGKILL');
      expect(await second.health()).toBe(false);
    },
    2 * BOOT_MS,
  );
});
