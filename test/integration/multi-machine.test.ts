/**
 * Many machines for real, on one host: every machine is a network namespace this test creates (a lab on
 * 10.213.0.0/24, cabled through a switch namespace; test/helpers/netns.ts, lab-cluster.ts). Three etcd members
 * with auth, four agents and two gateways each on a machine of its own, a client machine for the CLI and the
 * load. Replicas are sandboxed on their agent's machine and reached by gateways through the agents' node
 * ingress (mutual TLS).
 *
 * Under a bounded load of GETs through each gateway, one fault at a time: an agent's cable pulled and put
 * back, latency and loss on another agent, a gateway killed, an etcd member partitioned. Every request to a
 * live gateway must succeed (GETs in flight on a cut machine are retried elsewhere), the cluster must converge
 * after each fault, and nothing may be left behind. `KEEP_LAB=1` keeps the daemons' logs (in the temp dir)
 * for a post-mortem.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LabCluster } from '../helpers/lab-cluster.js';
import { sleep, waitFor } from '../helpers/tmp.js';

const DEMO = fileURLToPath(new URL('../../examples/demo/', import.meta.url));
const LOADGEN = fileURLToPath(new URL('../fixtures/loadgen.mjs', import.meta.url));
const AGENTS = ['a1', 'a2', 'a3', 'a4'];
const GATEWAYS = ['g1', 'g2'];
const APPS = ['alpha', 'beta'];
const DOMAIN = 'lab.test';

interface Sample {
  t: number;
  gw: string;
  host: string;
  status: number;
  ms: number;
  error?: string;
}

describe('many machines: replicas across hosts, partitions survived, nodes that come back', () => {
  let cluster: LabCluster;

  beforeAll(async () => {
    cluster = await LabCluster.start({
      etcd: ['e1', 'e2', 'e3'],
      agents: AGENTS,
      gateways: GATEWAYS,
      impairable: ['a3'],
      baseDomain: DOMAIN,
    });
    for (const app of APPS) cluster.cli(['create', app, '--from', DEMO, '--cmd', 'node server.mjs']);
    await cluster.converged(AGENTS.length, GATEWAYS);
  }, 240_000);

  afterAll(async () => {
    const lab = cluster?.lab;
    await cluster?.cleanup();
    // Nothing left behind: no namespace of this lab (and with them their links and processes).
    expect(lab?.existing() ?? []).toEqual([]);
  });

  it('serves every GET through live gateways while machines fail, and converges after each fault', async () => {
    const { lab } = cluster;
    const load = lab.spawn(
      'c1',
      [
        process.execPath,
        LOADGEN,
        '240000',
        '2',
        GATEWAYS.map((g) => cluster.gatewayUrl(g)).join(','),
        APPS.map((a) => `${a}.${DOMAIN}`).join(','),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    load.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const finished = new Promise<void>((r) => load.once('exit', () => r()));
    const faults: Record<string, number> = {};
    await sleep(3_000);

    // 1. An agent's cable is pulled: its replicas leave rotation, in-flight GETs are retried elsewhere.
    faults.cut = Date.now();
    lab.cut('a2');
    await sleep(6_000);
    lab.restore('a2');
    await cluster.converged(AGENTS.length, GATEWAYS);

    // 2. Latency and loss on another agent's link.
    await lab.netem('a3', { delayMs: 40, jitterMs: 10, lossPct: 5 });
    await sleep(6_000);
    await lab.netem('a3', null);
    await cluster.converged(AGENTS.length, GATEWAYS);

    // 3. A gateway dies: requests to it fail (it is gone), the other serves everything.
    faults.gatewayKilled = Date.now();
    await cluster.kill('g2');
    await cluster.converged(AGENTS.length, ['g1']);

    // 4. An etcd member is partitioned from everyone; the other two keep the registry going.
    lab.cut('e3');
    await sleep(6_000);
    lab.restore('e3');
    await waitFor(() => cluster.etcdHealthy(), { timeoutMs: 30_000, what: 'etcd whole again' });
    await cluster.converged(AGENTS.length, ['g1']);
    await sleep(2_000);

    load.kill('SIGTERM');
    await finished;
    const samples = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Sample & { done?: boolean })
      .filter((s) => !s.done);
    const live = samples.filter((s) => s.gw === cluster.gatewayUrl('g1') || s.t < (faults.gatewayKilled as number) - 100);
    const failed = live.filter((s) => s.status !== 200);
    const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? 0;
    const ms = live.map((s) => s.ms);
    const cutMs = live.filter((s) => s.t >= (faults.cut as number) && s.t < (faults.cut as number) + 6_000).map((s) => s.ms);
    const summary = {
      total: samples.length,
      live: live.length,
      p50: pct(ms, 0.5),
      p99: pct(ms, 0.99),
      max: Math.max(...ms),
      cutMax: Math.max(...cutMs),
    };
    console.log(`multi-machine load: ${JSON.stringify(summary)}`);
    const report = JSON.stringify({ ...summary, failed: failed.slice(0, 10), faults });
    expect(live.length, report).toBeGreaterThan(500);
    // Every GET to a live gateway succeeded, cut machine included (retried on another replica).
    expect(failed, report).toEqual([]);
    for (const app of APPS) expect(live.some((s) => s.host === `${app}.${DOMAIN}`)).toBe(true);
    // Requests kept flowing during the cut (not one long stall), across both apps.
    const duringCut = live.filter((s) => s.t > (faults.cut as number) + 3_000 && s.t < (faults.cut as number) + 6_000);
    expect(duringCut.length, report).toBeGreaterThan(20);
  }, 300_000);
});
