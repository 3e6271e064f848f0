/**
 * A devnet keeps its network whole: an agent or the gateway that dies is restarted as itself (same node
 * id, same ports) and reported; meanwhile the CLI moves to another agent with one line on stderr, and the
 * demo app keeps answering.
 */
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InstanceStatus } from '../../protocol/types.js';
import { cliJson, DEVNET_FREE_PORTS, type DevnetInfo, isAlive, runCli, startDevnet, stopDevnet } from '../helpers/cli.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

describe('devnet supervision and CLI failover', () => {
  const dir = tempDir('allegra-supervise-');
  const env = { ALLEGRA_HOME: `${dir.path}/home` };
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo;

  beforeAll(async () => {
    devnet = await startDevnet([...DEVNET_FREE_PORTS, '--data', `${dir.path}/devnet`], env);
    info = devnet.info;
  }, 90_000);

  afterAll(async () => {
    await stopDevnet(devnet);
    dir.cleanup();
  });

  const demoOk = async () => {
    const r = await request(`${info.http}/`, { headers: { host: 'demo.localhost' } });
    await r.body.dump();
    return r.statusCode === 200;
  };

  it('restarts a SIGKILLed agent as the same node, and the CLI fails over to another agent meanwhile', async () => {
    const first = info.agents[0] as DevnetInfo['agents'][0];
    process.kill(first.pid, 'SIGKILL');
    // The first agent in the CLI's config is gone: the command still works, through another agent.
    const listed = await runCli(['list', '--json'], env);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout).instances.map((i: { name: string }) => i.name)).toContain('demo');
    const notices = listed.stderr.trim().split('\n').filter(Boolean);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(new RegExp(`agent ${first.rpc.replace(/\/$/, '')}/? did not answer .*; using http://127\\.0\\.0\\.1:\\d+`));
    expect(await demoOk()).toBe(true);
    // The devnet brings it back under the same node id, and says so.
    await waitFor(() => /agent-0 exited \(SIGKILL\); restarting/.test(devnet.stderr()), { timeoutMs: 5_000, what: 'exit reported' });
    await waitFor(() => /agent-0 is back \(pid \d+\)/.test(devnet.stderr()), { timeoutMs: 20_000, what: 'restart reported' });
    const status = await waitFor(
      async () => {
        const s = await cliJson<InstanceStatus>(['status', 'demo'], env);
        const mine = s.replicas.filter((r) => r.healthy && r.nodeId === first.node);
        // Slots that moved away while it was gone come back; the stand-ins retire (make-before-break).
        return s.quorum?.members.includes(first.node) && mine.length > 0 && s.replicas.length === 3 ? s : undefined;
      },
      { timeoutMs: 40_000, what: 'the restarted node serving again, stand-ins retired' },
    );
    expect(new Set(status.replicas.filter((r) => r.healthy).map((r) => r.nodeId)).size).toBe(3);
    // Back at its address: the CLI uses the first agent again without a notice.
    const again = await runCli(['list', '--json'], env);
    expect(again.code).toBe(0);
    expect(again.stderr.trim()).toBe('');
  });

  it('restarts a SIGKILLed gateway on the same ports', async () => {
    process.kill(info.gateway.pid, 'SIGKILL');
    await waitFor(() => !isAlive(info.gateway.pid), { what: 'gateway gone' });
    await waitFor(() => /gateway is back/.test(devnet.stderr()), { timeoutMs: 20_000, what: 'gateway restart reported' });
    await waitFor(demoOk, { timeoutMs: 10_000, what: 'demo through the restarted gateway' });
  });
});
