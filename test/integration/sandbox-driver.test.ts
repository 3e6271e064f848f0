/**
 * The process driver with the real sandbox (bubblewrap, cgroups, socat, setpriv; this test runs as root):
 * the replica's own directories, graceful stop, no process or cgroup left behind, a host socket offered
 * inside on 127.0.0.1, and destroy() releasing an instance's uid and directories.
 */
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { Client, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReplicaHandle, ReplicaLaunch } from '../../quorum-agent/drivers/driver.js';
import { ProcessDriver } from '../../quorum-agent/drivers/process.js';
import { readLayout, scopeDirs } from '../../quorum-agent/sandbox/cgroups.js';
import { Sandbox } from '../../quorum-agent/sandbox/sandbox.js';
import { probeSandbox } from '../../quorum-agent/sandbox/support.js';
import { UidAllocator } from '../../quorum-agent/sandbox/uids.js';
import { isRunning } from '../helpers/cli.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

const PROBE_APP = fileURLToPath(new URL('../fixtures/sandbox-probe/', import.meta.url));

describe('process driver in the sandbox', () => {
  const dir = tempDir('allegra-drv-');
  const scope = `allegra-drvtest-${process.pid}`;
  const support = probeSandbox();
  let sandbox: Sandbox;
  let driver: ProcessDriver;
  let stateServer: Server;
  // In a directory of its own, as the agent keeps it: the sandbox binds (and hands to the instance) that directory.
  const stateSocket = join(dir.path, 'state', 'api.sock');
  const launch = (over: Partial<ReplicaLaunch> = {}): ReplicaLaunch => ({
    instanceId: 'i-drv000000001',
    instanceName: 'probe',
    owner: 'a'.repeat(64),
    slot: 0,
    workDir: join(dir.path, 'app'),
    cmd: 'node server.mjs',
    env: { GREETING: 'hi' },
    listenPort: 0,
    logFile: join(dir.path, 'logs', 'replica.log'),
    ...over,
  });
  const get = async (h: ReplicaHandle, path: string) => {
    const client = new Client('http://localhost', { socketPath: h.endpoint.slice('unix:'.length) });
    try {
      const res = await request(`http://localhost${path}`, { dispatcher: client });
      return (await res.body.json()) as Record<string, unknown>;
    } finally {
      await client.close();
    }
  };
  const healthy = (h: ReplicaHandle) => waitFor(() => h.health(), { timeoutMs: 10_000, what: 'replica healthy' });
  const cgroupChildren = () => {
    const layout = readLayout();
    if ('error' in layout) return [];
    const [first] = scopeDirs(layout, scope);
    return readdirSync(first as string).filter((n) => n.startsWith('i-'));
  };

  beforeAll(async () => {
    // Under CI a host that cannot sandbox is a failure, not a skip: install-deps installs what is needed.
    expect(support, 'this host must be able to sandbox replicas (root, bubblewrap, socat, cgroups)').toMatchObject({ ok: true });
    if (!support.ok) return;
    mkdirSync(join(dir.path, 'app'));
    cpSync(PROBE_APP, join(dir.path, 'app'), { recursive: true });
    sandbox = new Sandbox(
      support,
      join(dir.path, 'sandbox'),
      new UidAllocator(join(dir.path, 'uids.json'), { first: 280_000, count: 10 }),
      scope,
      pino({ level: 'silent' }),
    );
    await sandbox.open();
    driver = new ProcessDriver({ support, sandbox, dataRoot: join(dir.path, 'sandbox') });
    stateServer = createServer((req, res) => res.end(`state says hello to ${req.url}`));
    mkdirSync(join(dir.path, 'state'), { mode: 0o700 });
    await new Promise<void>((r) => stateServer.listen(stateSocket, r));
    chmodSync(stateSocket, 0o666);
  });

  afterAll(async () => {
    stateServer?.close();
    await sandbox?.close();
    dir.cleanup();
  });

  it('gives each replica slot its own writable data dir, kept across restarts; the artifact is read-only', async () => {
    const a = await driver.start(launch());
    const b = await driver.start(launch({ slot: 1 }));
    await Promise.all([healthy(a), healthy(b)]);
    const fa = await get(a, '/files');
    const fb = await get(b, '/files');
    expect(fa).toMatchObject({ previous: null, data: 'written', app: 'EROFS', tmp: 'written', slot: '0' });
    expect(fb).toMatchObject({ previous: null, slot: '1' });
    await a.stop();
    const again = await driver.start(launch());
    await healthy(again);
    // The slot's data survived its restart; slot 1's writes never showed up in slot 0's dir.
    expect(await get(again, '/files')).toMatchObject({ previous: '1' });
    await Promise.all([again.stop(), b.stop()]);
  });

  it('stops gracefully (SIGTERM reaches the app), then leaves no process and no cgroup', async () => {
    const h = await driver.start(launch({ cmd: 'sleep 1000 & node server.mjs' }));
    await healthy(h);
    expect(cgroupChildren()).toHaveLength(1);
    const layout = readLayout();
    if ('error' in layout) throw new Error(layout.error);
    const [first] = scopeDirs(layout, scope);
    const pids = readFileSync(join(first as string, cgroupChildren()[0] as string, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
    expect(pids.length).toBeGreaterThanOrEqual(5);
    await h.stop(5_000);
    expect(existsSync(join(dir.path, 'sandbox', 'replicas', 'i-drv000000001', '0', 'data', 'terminated'))).toBe(true);
    const alive = pids
      .filter(isRunning)
      .map(
        (p) =>
          `${p}: ${readFileSync(`/proc/${p}/cmdline`, 'utf8')} ${readFileSync(`/proc/${p}/status`, 'utf8').split('\n').slice(0, 8).join(' ')}`,
      );
    expect(alive).toEqual([]);
    expect(cgroupChildren()).toEqual([]);
    expect(readdirSync(join(dir.path, 'sandbox', 'run'))).toEqual([]);
  });

  it('kills a replica that ignores SIGTERM after the grace period', async () => {
    const h = await driver.start(
      launch({ cmd: "trap '' TERM; sleep 1000 & node -e \"process.on('SIGTERM',()=>{});require('./server.mjs')\"" }),
    );
    await healthy(h);
    const t0 = Date.now();
    await h.stop(300);
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(cgroupChildren()).toEqual([]);
    expect(h.pid !== null && isRunning(h.pid)).toBe(false);
  });

  it('offers a host Unix socket inside on 127.0.0.1:port, and nothing else outside', async () => {
    const h = await driver.start(
      launch({
        exposed: [{ hostPath: stateSocket, port: 7171 }],
        stateUrl: 'http://127.0.0.1:7171/v1/',
        env: { ALLEGRA_STATE_URL: 'http://evil/' },
      }),
    );
    await healthy(h);
    expect(await get(h, '/state')).toEqual({ state: 'state says hello to /v1/' });
    await h.stop();
    // Without the exposure, the same URL leads nowhere: the replica's loopback is its own.
    const closed = await driver.start(launch({ stateUrl: 'http://127.0.0.1:7171/v1/' }));
    await healthy(closed);
    expect((await get(closed, '/state')).state).toMatch(/^error: ECONNREFUSED/);
    await closed.stop();
    // The socket's directory goes to the tenant: one holding anything else is refused.
    await expect(driver.start(launch({ exposed: [{ hostPath: join(dir.path, 'shared.sock'), port: 7171 }] }))).rejects.toThrow(
      /must be alone in its directory/,
    );
  });

  it('destroy() removes the instance’s directories and releases its uid', async () => {
    const uid = sandbox.uids.get('i-drv000000001');
    expect(uid).toBe(280_000);
    await driver.destroy('i-drv000000001');
    expect(sandbox.uids.get('i-drv000000001')).toBeUndefined();
    expect(existsSync(join(dir.path, 'sandbox', 'replicas', 'i-drv000000001'))).toBe(false);
  });
});
