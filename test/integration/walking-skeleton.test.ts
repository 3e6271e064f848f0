/**
 * The walking skeleton end to end: a real devnet (embedded registry, 3 agent processes, a gateway
 * process, the demo app), the real CLI, real sockets and real replica processes.
 */
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InstanceStatus } from '../../protocol/types.js';
import { cliJson, DEVNET_FREE_PORTS, type DevnetInfo, isAlive, runCli, startDevnet } from '../helpers/cli.js';
import { sleep, tempDir, waitFor } from '../helpers/tmp.js';

const ECHO_APP = fileURLToPath(new URL('../fixtures/echo-app/', import.meta.url));

describe('walking skeleton: devnet, CLI, agents and gateway', () => {
  const dir = tempDir('allegra-skeleton-');
  const env = { ALLEGRA_HOME: `${dir.path}/home` };
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo;

  const get = async (host: string, path = '/') => {
    const res = await request(`${info.http}${path}`, { headers: { host } });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, text };
  };

  beforeAll(async () => {
    devnet = await startDevnet([...DEVNET_FREE_PORTS, '--data', `${dir.path}/devnet`], env);
    info = devnet.info;
  }, 90_000);

  afterAll(async () => {
    if (devnet && devnet.child.exitCode === null) {
      devnet.child.kill('SIGKILL');
    }
    dir.cleanup();
  });

  it('serves the demo app through the gateway by Host, from every replica', async () => {
    expect(info.instances.map((i) => i.name)).toEqual(['demo']);
    const replicas = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const r = await get('demo.localhost');
      // On failure, show the gateway's one-line reason (it names the upstream error).
      expect(`${r.status}${r.status === 200 ? '' : ` ${r.text.trim()}`}`).toBe('200');
      replicas.add(JSON.parse(r.text).replica);
    }
    // Three agents, one replica each: the balancer spreads requests over all of them.
    expect(replicas.size).toBe(3);
    // The Host header may carry a port and any case.
    expect((await get('Demo.LOCALHOST:8080')).status).toBe(200);
  });

  it('creates and deploys a second app with the CLI and routes to it by Host', async () => {
    const created = await cliJson<{ id: string; url: string }>(['create', 'echo', '--replicas', '2:2'], env);
    expect(created.id).toMatch(/^i-/);
    const deployed = await cliJson<{ version: number; quorum: { members: string[] }; artifact: { holders: string[] } }>(
      ['deploy', 'echo', ECHO_APP],
      env,
    );
    // Versions count deploys: the first one is version 1.
    expect(deployed.version).toBe(1);
    // Committed only after a majority of the quorum held the code.
    expect(deployed.artifact.holders.filter((h) => deployed.quorum.members.includes(h)).length).toBeGreaterThanOrEqual(2);
    const r = await get('echo.localhost', '/hello?x=1');
    expect(r.status).toBe(200);
    const body = JSON.parse(r.text);
    expect(body).toMatchObject({ app: 'echo', url: '/hello?x=1', host: 'echo.localhost', forwardedFor: '127.0.0.1' });
    expect(body.requestId).toBe(r.headers['x-request-id']);
    const post = await request(`${info.http}/items`, { method: 'POST', headers: { host: 'echo.localhost' }, body: 'payload' });
    expect(JSON.parse(await post.body.text())).toMatchObject({ method: 'POST', body: 'payload' });
    // Both apps stay reachable side by side.
    expect(JSON.parse((await get('demo.localhost')).text).instance).toBe('demo');
    const list = await cliJson<{ instances: Array<{ name: string }> }>(['list'], env);
    expect(list.instances.map((i) => i.name).sort()).toEqual(['demo', 'echo']);
  });

  it('routes around a SIGKILLed replica within the health interval and restarts it', async () => {
    const before = await cliJson<InstanceStatus>(['status', 'echo'], env);
    expect(before.replicas.filter((r) => r.healthy)).toHaveLength(2);
    const victim = before.replicas[0]!;
    expect(victim.pid && isAlive(victim.pid)).toBeTruthy();
    process.kill(victim.pid as number, 'SIGKILL');
    const killedAt = Date.now();
    let failures = 0;
    const answeredBy = new Set<number>();
    // Bounded loop: 1.5 s of sequential requests right after the kill.
    while (Date.now() - killedAt < 1_500) {
      const r = await get('echo.localhost');
      if (r.status === 200) answeredBy.add(JSON.parse(r.text).pid);
      else failures++;
    }
    expect(failures).toBe(0);
    expect(answeredBy.has(victim.pid as number)).toBe(false);
    // The agent restarts the replica (new pid) and it rejoins the rotation.
    const after = await waitFor(
      async () => {
        const s = await cliJson<InstanceStatus>(['status', 'echo'], env);
        const healthy = s.replicas.filter((r) => r.healthy);
        return healthy.length === 2 && healthy.every((r) => r.pid !== victim.pid) ? s : undefined;
      },
      { timeoutMs: 10_000, what: 'replica restart' },
    );
    expect(after.replicas.find((r) => r.slot === victim.slot)?.restarts).toBeGreaterThanOrEqual(1);
  });

  it('answers 404 for an unknown host and 503 when every replica is stopped', async () => {
    const unknown = await get('nobody.localhost');
    expect(unknown.status).toBe(404);
    expect(unknown.headers['x-request-id']).toBeTruthy();
    expect(unknown.text).toMatch(/no route for host nobody\.localhost/);

    const stopped = await cliJson<{ state: string }>(['stop', 'echo'], env);
    expect(stopped.state).toBe('stopped');
    const r = await waitFor(
      async () => {
        const res = await get('echo.localhost');
        return res.status === 503 ? res : undefined;
      },
      { timeoutMs: 10_000, what: '503 after stop' },
    );
    expect(r.headers['x-request-id']).toBeTruthy();
    expect(r.headers['retry-after']).toBe('1');
    expect(r.text).toMatch(/no healthy replica for echo\.localhost/);

    await cliJson(['start', 'echo'], env);
    await waitFor(async () => (await get('echo.localhost')).status === 200, { timeoutMs: 15_000, what: 'echo back after start' });
  });

  it('reports CLI failures as one line with a non-zero exit code', async () => {
    const missing = await runCli(['status', 'ghost'], env);
    expect(missing.code).toBe(3);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toMatch(/no instance named "ghost"/);
    const dup = await runCli(['create', 'echo'], env);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/already exists/);
    const bad = await runCli(['create', 'Bad_Name!'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid instance name/);
    const usage = await runCli(['create', 'x', '--replicas', 'lots'], env);
    expect(usage.code).toBe(2);
  });

  it('deletes an instance: its route disappears', async () => {
    await cliJson(['delete', 'echo'], env);
    await waitFor(async () => (await get('echo.localhost')).status === 404, { timeoutMs: 10_000, what: 'route removed' });
  });

  it('stops every process it started on SIGINT', async () => {
    const status = await cliJson<InstanceStatus>(['status', 'demo'], env);
    const pids = [...info.agents.map((a) => a.pid), info.gateway.pid, ...status.replicas.map((r) => r.pid as number)];
    expect(pids.every(isAlive)).toBe(true);
    const exited = new Promise<number | null>((r) => devnet.child.once('exit', (code) => r(code)));
    devnet.child.kill('SIGINT');
    expect(await exited).toBe(0);
    await waitFor(() => pids.every((p) => !isAlive(p)), { timeoutMs: 5_000, what: 'all child processes gone' });
    await sleep(10);
  });
});
