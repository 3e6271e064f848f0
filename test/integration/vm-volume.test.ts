/**
 * A vm instance's disk is its volume (issue 18): three agents on the embedded registry and a gateway, with
 * real QEMU (TCG here). Two agents offer the vm driver, the third only processes: it keeps a verified copy of
 * the disk like every member but never runs the VM. `allegra create --driver vm` makes one VM; what is written
 * to its /data is replicated; the machine running it is lost (its agent SIGKILLed, QEMU dies with it), and
 * the other vm-capable member boots the VM from the newest copy — same file, same SSH host key, same app
 * through the gateway.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../cli/children.js';
import type { InstanceStatus } from '../../protocol/types.js';
import { buildImage } from '../../quorum-agent/vm/image.js';
import { cliJson, runCli } from '../helpers/cli.js';
import { LocalCluster } from '../helpers/local-cluster.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

const DEMO = fileURLToPath(new URL('../../examples/demo/', import.meta.url));
/** A boot under TCG on the loaded 2-core machine: bounded, a few minutes at most. */
const BOOT_MS = 240_000;

describe('a vm instance whose machine is lost boots elsewhere from the newest copy of its disk', () => {
  const dir = tempDir('allegra-vm-volume-');
  const cluster = new LocalCluster(dir.path);
  const agents = cluster.agents;
  let env: Record<string, string>;
  const client = new Agent({ headersTimeout: 10_000, bodyTimeout: 10_000 });
  const images = join(dir.path, 'vm-images');

  const via = () => ({ ...env, ALLEGRA_RPC: String(cluster.alive()?.ready.rpc) });
  const status = () => cliJson<InstanceStatus>(['status', 'web'], via());
  const ssh = (command: string) => runCli(['ssh', 'web', '--', command], via(), 60_000);
  const sshOk = (command: string, what: string) =>
    waitFor(
      async () => {
        const r = await ssh(command);
        return r.code === 0 ? r : undefined;
      },
      { timeoutMs: BOOT_MS, intervalMs: 1_000, what },
    );
  const served = async () => {
    const res = await request(`http://127.0.0.1:${cluster.gateway?.ready.http}/`, {
      headers: { host: 'web.localhost' },
      dispatcher: client,
    }).catch(() => undefined);
    const text = (await res?.body.text()) ?? '';
    return res?.statusCode === 200 ? (JSON.parse(text) as { instance: string; host: string }) : undefined;
  };

  beforeAll(async () => {
    // Built once for the agents that share the cache (a few seconds), before they start.
    await buildImage(images);
    // Two agents offer VMs; the third only processes (it keeps a copy of the disk, never runs the VM).
    await cluster.start({
      agents: 3,
      quorumSize: 3,
      uidBase: 260_000,
      agentExtra: (i) => ['--drivers', i < 2 ? 'process,vm' : 'process', '--vm-images', images],
    });
    env = { ALLEGRA_HOME: join(dir.path, 'home') };
    await cliJson(['keys', 'init'], via());
  }, 120_000);

  afterAll(async () => {
    await client.close();
    await cluster.stop(20_000);
    if (!process.env.ALLEGRA_KEEP_TEST_DIRS) dir.cleanup();
  }, 60_000);

  it(
    'runs one VM whose disk every member holds, and refuses more replicas with one line',
    async () => {
      const many = await runCli(['create', 'many', '--driver', 'vm', '--from', DEMO, '--replicas', '2:2'], via());
      expect(many.code).toBe(1);
      expect(many.stderr.trim()).toMatch(/^allegra: a vm instance is one VM whose disk is its volume \(one writer\)[^\n]*$/);

      const created = await runCli(['create', 'web', '--driver', 'vm', '--from', DEMO, '--json'], via(), BOOT_MS + 60_000);
      expect(created.code, created.stderr).toBe(0);
      expect(JSON.parse(created.stdout).instance).toMatchObject({ driver: 'vm', volume: true, replicas: { min: 1, max: 1 } });
      await sshOk('uname -r', 'allegra ssh web -- uname -r');
      const s = await status();
      expect(s.replicas).toHaveLength(1);
      // The writer runs the VM, on a member that offers the driver.
      const writer = s.replicas[0]?.nodeId;
      expect([agents[0]?.ready.node, agents[1]?.ready.node]).toContain(writer);
      const members = await waitFor(
        async () => {
          const m = (await status()).members;
          return m.length === 3 && m.every((x) => x.volume?.complete && (x.volume?.seq ?? 0) > 0) ? m : undefined;
        },
        { timeoutMs: 60_000, what: 'every member to hold the disk whole' },
      );
      expect(members.find((m) => m.nodeId === writer)?.volume?.role).toBe('writing');
      // The process-only member keeps a copy but is not the writer, and never will be.
      expect(members.find((m) => m.nodeId === agents[2]?.ready.node)?.volume?.role).toBe('follower');
    },
    2 * BOOT_MS,
  );

  it(
    'boots the VM on another member from the newest copy when the machine running it is lost',
    async () => {
      const token = `kept-${Date.now()}`;
      // `sync`: in the guest's disk, as an app's fsync would leave it; the snapshot after it must carry it.
      expect((await ssh(`echo ${token} > /data/token && sync`)).code).toBe(0);
      const written = Date.now();
      const before = await status();
      const writer = before.replicas[0]?.nodeId as string;
      const hostKeyBefore = (await ssh('sha256sum /seed/host_key')).stdout;
      expect(hostKeyBefore).toMatch(/^[0-9a-f]{64} /);
      await waitFor(
        async () => {
          const m = (await status()).members;
          const head = m.find((x) => x.nodeId === writer)?.volume;
          // A snapshot captured after the write, held whole by a majority (the writer and one more).
          const holders = m.filter((x) => x.volume?.complete && (x.volume?.seq ?? 0) >= (head?.seq ?? 0));
          return head && (head.capturedAt ?? 0) > written && holders.length >= 2 ? head : undefined;
        },
        { timeoutMs: 60_000, what: 'a committed snapshot taken after the write' },
      );
      const lost = agents.find((a) => a.ready.node === writer) as Daemon;
      const survivor = agents.find((a) => a !== lost && a !== agents[2]) as Daemon;
      lost.child.kill('SIGKILL');
      const killedAt = Date.now();
      // The same app, its VM now on the other vm-capable member.
      const moved = await waitFor(
        async () => {
          const r = (await status().catch(() => undefined))?.replicas[0];
          return r?.nodeId === survivor.ready.node && r?.healthy ? r : undefined;
        },
        { timeoutMs: BOOT_MS, intervalMs: 1_000, what: 'the VM booted on the other vm member' },
      );
      expect(moved.accel).toBeDefined();
      expect(await waitFor(served, { timeoutMs: 60_000, what: 'the app through the gateway' })).toMatchObject({
        instance: 'web',
        host: 'web-0',
      });
      const read = await sshOk('cat /data/token', 'allegra ssh web -- cat /data/token');
      expect(read.stdout).toBe(`${token}\n`);
      // Its identity moved with its disk: the same SSH host key.
      const hostKeyAfter = (await ssh('sha256sum /seed/host_key')).stdout;
      expect(hostKeyAfter).toBe(hostKeyBefore);
      const after = (await status()).members.find((m) => m.nodeId === survivor.ready.node)?.volume;
      expect(after?.role).toBe('writing');
      console.log(`vm failover: ${Date.now() - killedAt} ms from SIGKILL of the writer's agent to the data read back over SSH`);
    },
    BOOT_MS + 120_000,
  );
});
