/**
 * Multi-node on etcd: a 3-member etcd cluster, 4 agents and 2 gateways as separate processes, 2 apps.
 * Under a bounded load on gateway A we kill, in turn, an etcd member, the agent leading the controller,
 * and gateway B; every request to gateway A must succeed and the cluster must converge. Then etcd stops
 * entirely: gateway A keeps serving from memory, and resyncs when etcd returns.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon, stopDaemon } from '../../cli/children.js';
import { keys, PREFIX } from '../../protocol/keys.js';
import type { Registry } from '../../protocol/registry.js';
import type { InstanceStatus } from '../../protocol/types.js';
import { openRegistry } from '../../registry/open.js';
import { CLI, cliJson } from '../helpers/cli.js';
import { type EtcdCluster, startEtcdCluster } from '../helpers/etcd-cluster.js';
import { sleep, tempDir, waitFor } from '../helpers/tmp.js';

const ECHO_APP = fileURLToPath(new URL('../fixtures/echo-app/', import.meta.url));
const DEMO_APP = fileURLToPath(new URL('../../examples/demo/', import.meta.url));

describe('a cluster on etcd survives the loss of an etcd member, an agent and a gateway', () => {
  const dir = tempDir('allegra-cluster-');
  let etcd: EtcdCluster;
  let url: string;
  let registry: Registry;
  const agents: Daemon[] = [];
  const gateways: Daemon[] = [];
  let env: Record<string, string>;

  const gatewayUrl = (g: Daemon) => `http://127.0.0.1:${g.ready.http}`;
  const get = async (g: Daemon, host: string) => {
    const res = await request(gatewayUrl(g), { headers: { host }, headersTimeout: 5_000, bodyTimeout: 5_000 });
    return { status: res.statusCode, text: await res.body.text() };
  };
  const liveAgent = () => agents.find((d) => d.child.exitCode === null && d.child.signalCode === null) as Daemon;
  /** `allegra status` through an agent that is alive: any agent can answer for the whole network. */
  const status = (name: string) => cliJson<InstanceStatus>(['status', name], { ...env, ALLEGRA_RPC: String(liveAgent().ready.rpc) });
  const liveNodes = async () => (await registry.list(PREFIX.nodes)).items.map((kv) => kv.key.slice(PREFIX.nodes.length));
  const converged = async (name: string, want: number) => {
    const s = await status(name);
    const nodes = new Set(await liveNodes());
    const healthy = s.replicas.filter((r) => r.healthy && nodes.has(r.nodeId));
    return healthy.length === want && s.replicas.length === want && (s.quorum?.members.every((m) => nodes.has(m)) ?? false) ? s : undefined;
  };

  beforeAll(async () => {
    // With etcd's auth on: agents and gateways act as their roles, so the role table must be enough for them.
    etcd = await startEtcdCluster({ members: 3, auth: true });
    const creds = etcd.credentials as NonNullable<EtcdCluster['credentials']>;
    url = `etcd://${etcd.endpoints.join(',')}`;
    registry = await openRegistry(url, { role: 'admin', credentialsFile: creds.admin });
    await registry.put(keys.network(), JSON.stringify({ baseDomain: 'localhost', quorumSize: 3 }));
    for (let i = 0; i < 4; i++) {
      agents.push(
        await startDaemon(
          `agent-${i}`,
          [
            'agent',
            '--registry',
            url,
            '--listen',
            '127.0.0.1:0',
            '--data',
            join(dir.path, `agent-${i}`),
            '--log',
            join(dir.path, `agent-${i}.log`),
            '--registry-credentials',
            creds.agent,
          ],
          30_000,
          CLI,
        ),
      );
    }
    for (let i = 0; i < 2; i++) {
      gateways.push(
        await startDaemon(
          `gateway-${i}`,
          [
            'gateway',
            '--registry',
            url,
            '--registry-credentials',
            creds.gateway,
            '--http',
            '0',
            '--https',
            '0',
            '--admin',
            '0',
            '--log',
            join(dir.path, `gateway-${i}.log`),
          ],
          30_000,
          CLI,
        ),
      );
    }
    env = { ALLEGRA_HOME: join(dir.path, 'home'), ALLEGRA_RPC: String(agents[0]?.ready.rpc) };
    await cliJson(['keys', 'init'], env);
    const ids = agents.map((a) => String(a.ready.node));
    await waitFor(
      async () => {
        const { items } = await registry.list(PREFIX.quorums);
        const members = new Set(items.flatMap((kv) => (JSON.parse(kv.value) as { members: string[] }).members));
        return ids.every((id) => members.has(id));
      },
      { timeoutMs: 20_000, what: 'quorums to include all 4 agents' },
    );
    await cliJson(['create', 'echo', '--replicas', '3:3', '--from', ECHO_APP], env);
    await cliJson(['create', 'demo', '--replicas', '3:3', '--cmd', 'node server.mjs', '--from', DEMO_APP], env);
    for (const g of gateways) {
      await waitFor(async () => (await get(g, 'echo.localhost')).status === 200 && (await get(g, 'demo.localhost')).status === 200, {
        timeoutMs: 15_000,
        what: 'both apps on both gateways',
      });
    }
  }, 120_000);

  afterAll(async () => {
    await Promise.allSettled([...gateways, ...agents].map((d) => stopDaemon(d, 3_000)));
    await registry?.close();
    await etcd?.stop();
    dir.cleanup();
  });

  it('serves every request through gateway A while etcd member, controller leader and gateway B die', async () => {
    const [a, b] = gateways as [Daemon, Daemon];
    const failures: string[] = [];
    let served = 0;
    let stop = false;
    const load = Promise.all(
      Array.from({ length: 4 }, async (_, w) => {
        for (let i = 0; !stop && i < 100_000; i++) {
          const host = (i + w) % 2 === 0 ? 'echo.localhost' : 'demo.localhost';
          try {
            const r = await get(a, host);
            if (r.status === 200) served++;
            else failures.push(`${host} ${r.status} ${r.text.trim()}`);
          } catch (err) {
            failures.push(`${host} ${(err as Error).message}`);
          }
        }
      }),
    );
    try {
      // 1. An etcd member dies.
      await sleep(500);
      await etcd.kill(0);
      await sleep(1_500);

      // 2. The agent that leads the controller dies; its lease expires, a new leader is elected, its
      //    node vanishes for everyone, and the quorum is refilled from the remaining agents.
      const leaderId = (await registry.get(keys.leader('controller')))?.value;
      const victim = agents.find((d) => d.ready.node === leaderId) as Daemon;
      expect(victim).toBeDefined();
      const killedAt = Date.now();
      victim.child.kill('SIGKILL');
      const newLeader = await waitFor(
        async () => {
          const v = (await registry.get(keys.leader('controller')))?.value;
          return v && v !== leaderId ? v : undefined;
        },
        { timeoutMs: 8_000, what: 'a new controller leader' },
      );
      const leaderGapMs = Date.now() - killedAt;
      await waitFor(async () => !(await liveNodes()).includes(leaderId as string), { timeoutMs: 8_000, what: 'dead node to vanish' });
      const nodeGoneMs = Date.now() - killedAt;
      console.info(`controller leader replaced after ${leaderGapMs} ms; dead node gone for everyone after ${nodeGoneMs} ms`);
      // Lease TTL is 3 s; etcd checks expiry every 500 ms.
      expect(nodeGoneMs).toBeLessThan(4_500);
      expect(leaderGapMs).toBeLessThan(4_500);
      expect(newLeader).not.toBe(leaderId);
      for (const name of ['echo', 'demo'])
        await waitFor(() => converged(name, 3), { timeoutMs: 20_000, what: `${name} to converge on live nodes` });

      // 3. Gateway B dies; A does not notice.
      b.child.kill('SIGKILL');
      await sleep(1_500);
    } finally {
      stop = true;
      await load;
    }
    expect(failures).toEqual([]);
    expect(served).toBeGreaterThan(200);
  }, 90_000);

  it('keeps serving from memory while etcd is down, and resyncs when it returns', async () => {
    const [a] = gateways as [Daemon];
    for (let i = 0; i < 3; i++) await etcd.kill(i).catch(() => {});
    const deadline = Date.now() + 2_000;
    while (Date.now() < deadline) {
      expect((await get(a, 'echo.localhost')).status).toBe(200);
      expect((await get(a, 'demo.localhost')).status).toBe(200);
    }
    // Members are restarted together: one alone cannot become healthy without a majority.
    await Promise.all([0, 1, 2].map((i) => etcd.restart(i)));
    // A change made after the outage reaches the gateway through its resumed watches.
    const env2 = { ...env, ALLEGRA_RPC: String(liveAgent().ready.rpc) };
    await waitFor(
      async () => {
        try {
          await cliJson(['create', 'late', '--replicas', '2:2', '--from', ECHO_APP], env2);
          return true;
        } catch {
          return false;
        }
      },
      { timeoutMs: 20_000, intervalMs: 500, what: 'create after etcd restart' },
    );
    await waitFor(async () => (await get(a, 'late.localhost')).status === 200, { timeoutMs: 20_000, what: 'new app through gateway A' });
  }, 60_000);
});
