/**
 * A vm instance end to end through the built CLI, on a real devnet (embedded registry, one agent offering the
 * vm driver, a gateway) with real QEMU (TCG here): `allegra create --driver vm --from examples/demo`, then
 * `allegra ssh NAME -- uname -r` reaching the VM's own SSH server (bounded), the app through the gateway,
 * `allegra status` saying which accelerator runs it, the volume kept across `allegra stop`/`start`, and a
 * SIGKILLed QEMU restarted by the agent. One agent: one VM boot at a time on the 2-core machine.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InstanceStatus } from '../../protocol/types.js';
import { chooseAccel, hostFacts } from '../../quorum-agent/vm/accel.js';
import { findInputs } from '../../quorum-agent/vm/image.js';
import { cliJson, DEVNET_FREE_PORTS, type DevnetInfo, isRunning, runCli, startDevnet, stopDevnet } from '../helpers/cli.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

const DEMO = fileURLToPath(new URL('../../examples/demo/', import.meta.url));
/** A boot under TCG on the loaded 2-core machine: bounded, a few minutes at most. */
const BOOT_MS = 240_000;

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

describe('a vm instance through the CLI and the gateway', () => {
  const dir = tempDir('allegra-vm-cli-');
  const env = { ALLEGRA_HOME: `${dir.path}/home` };
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo;
  const client = new Agent({ headersTimeout: 10_000, bodyTimeout: 10_000 });
  const release = findInputs().kernel.replace(/^.*vmlinuz-/, '');

  const get = async (path = '/') => {
    const res = await request(`${info.http}${path}`, { headers: { host: 'web.localhost' }, dispatcher: client });
    return { status: res.statusCode, text: await res.body.text() };
  };
  const status = () => cliJson<InstanceStatus>(['status', 'web'], env);
  const ssh = (command: string) => runCli(['ssh', 'web', '--', command], env, 60_000);
  const served = async () => {
    const r = await get().catch(() => ({ status: 0, text: '' }));
    return r.status === 200 ? (JSON.parse(r.text) as { instance: string; host: string }) : undefined;
  };

  beforeAll(async () => {
    devnet = await startDevnet(
      [...DEVNET_FREE_PORTS, ...['--agents', '1', '--drivers', 'process,vm', '--data', `${dir.path}/devnet`, '--no-demo']],
      env,
      120_000,
    );
    info = devnet.info;
    await cliJson(['keys', 'init'], env);
  }, 150_000);

  afterAll(async () => {
    await client.close();
    await stopDevnet(devnet, 20_000);
    dir.cleanup();
  }, 40_000);

  it(
    'creates a VM from the demo app; allegra ssh reaches its own SSH server; the gateway routes to it',
    async () => {
      const created = await runCli(
        ['create', 'web', '--driver', 'vm', '--from', DEMO, '--replicas', '1:1', '--memory', '512', '--vcpus', '1', '--json'],
        env,
        BOOT_MS + 60_000,
      );
      expect(created.code, created.stderr).toBe(0);
      expect(JSON.parse(created.stdout).instance).toMatchObject({ driver: 'vm', limits: { memoryMb: 512, vcpus: 1 } });
      // The VM's kernel, not the host's sandbox: dropbear in the guest ran the command.
      const uname = await waitFor(
        async () => {
          const r = await ssh('uname -r');
          return r.code === 0 ? r : undefined;
        },
        { timeoutMs: BOOT_MS, intervalMs: 1_000, what: 'allegra ssh web -- uname -r' },
      );
      expect(uname.stdout).toBe(`${release}\n`);
      const host = await ssh('hostname; exit 7');
      expect(host).toMatchObject({ code: 7, stdout: 'web-0\n' });
      expect(await served()).toMatchObject({ instance: 'web', host: 'web-0' });
      const s = await status();
      expect(s.replicas).toHaveLength(1);
      expect(s.replicas[0]).toMatchObject({ healthy: true, accel: chooseAccel(hostFacts()).accel });
      const table = await runCli(['status', 'web'], env);
      expect(table.stdout).toContain(`vm/${chooseAccel(hostFacts()).accel}`);
    },
    BOOT_MS + 120_000,
  );

  it('carries a plain OpenSSH client into the VM: a PTY shell and SFTP, exit codes kept', async () => {
    const printed = await cliJson<{ command: string }>(['ssh', 'web', '--print'], env);
    const words = printed.command.split(' ');
    const argv = [...words.slice(1, -1), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', words.at(-1) as string];
    // A PTY through `script`: the VM's shell sees a terminal (a pts of the guest's own devpts).
    const pty = await run('script', ['-qec', `ssh -tt ${argv.join(' ')} 'tty; uname -r; exit 5'`, '/dev/null']);
    expect(pty.stdout).toMatch(/^\/dev\/pts\/\d+\r?$/m);
    expect(pty.stdout).toContain(release);
    expect(pty.code).toBe(5);
    // SFTP into the VM's volume, served by the guest's sftp-server, read back over SSH.
    const local = join(dir.path, 'upload.txt');
    writeFileSync(local, 'uploaded over sftp\n');
    const batch = join(dir.path, 'sftp.batch');
    writeFileSync(batch, `put ${local} /data/upload.txt\n`);
    const sftp = await run('sftp', ['-b', batch, ...argv.map((a) => (a === '-p' ? '-P' : a))]);
    expect(sftp.code, sftp.stderr).toBe(0);
    expect((await ssh('cat /data/upload.txt')).stdout).toBe('uploaded over sftp\n');
  }, 120_000);

  it(
    'keeps the VM disk (its volume) across allegra stop and start',
    async () => {
      const token = `kept-${Date.now()}`;
      expect((await ssh(`echo ${token} > /data/token`)).code).toBe(0);
      const before = (await status()).replicas[0]?.pid as number;
      expect(isRunning(before)).toBe(true);
      expect((await runCli(['stop', 'web'], env)).code).toBe(0);
      await waitFor(() => !isRunning(before), { timeoutMs: 30_000, what: 'the VM to stop' });
      expect((await get()).status).toBeGreaterThanOrEqual(500);
      expect((await runCli(['start', 'web'], env)).code).toBe(0);
      await waitFor(served, { timeoutMs: BOOT_MS, intervalMs: 1_000, what: 'the VM after start' });
      const read = await waitFor(
        async () => {
          const r = await ssh('cat /data/token');
          return r.code === 0 ? r : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 1_000, what: 'ssh after start' },
      );
      expect(read.stdout).toBe(`${token}\n`);
    },
    2 * BOOT_MS,
  );

  it(
    'restarts a VM whose QEMU process was killed',
    async () => {
      const before = (await status()).replicas[0];
      const pid = before?.pid as number;
      expect(pid).toBeGreaterThan(0);
      process.kill(pid, 'SIGKILL');
      const after = await waitFor(
        async () => {
          const r = (await status()).replicas[0];
          return r?.healthy && r.pid !== pid && r.restarts > (before?.restarts ?? 0) ? r : undefined;
        },
        { timeoutMs: BOOT_MS, intervalMs: 1_000, what: 'the VM restarted' },
      );
      expect(isRunning(after.pid as number)).toBe(true);
      expect(await served()).toMatchObject({ instance: 'web', host: 'web-0' });
      const logs = await runCli(['logs', 'web'], env);
      expect(logs.stdout).toContain('allegra-vm: app starting on port 3000');
    },
    BOOT_MS + 60_000,
  );

  it('says clearly when no node offers the driver asked for', async () => {
    const r = await runCli(['create', 'nowasm', '--driver', 'wasm'], env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/no node of this network offers the wasm driver/);
  });
});
