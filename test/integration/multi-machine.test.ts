/**
 * Many machines for real, on one host: every machine is a network namespace this test creates (a lab on
 * 10.213.0.0/24, cabled through a switch namespace; test/helpers/netns.ts). Three etcd members with auth, four
 * agents and two gateways each on a machine of its own, a client machine for the CLI and the load. Replicas are
 * sandboxed on their agent's machine and reached by gateways through the agents' node ingress (mutual TLS).
 *
 * Under a bounded load of GETs through each gateway, one fault at a time: an agent's cable pulled and put
 * back, latency and loss on another agent, a gateway killed, an etcd member partitioned. Every request to a
 * live gateway must succeed (GETs in flight on a cut machine are retried elsewhere), the cluster must converge
 * after each fault, and nothing may be left behind. `KEEP_LAB=1` keeps the daemons' logs (in the temp dir)
 * for a post-mortem.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/cli.js';
import { canCreateNamespaces, Lab } from '../helpers/netns.js';
import { sleep, tempDir, waitFor } from '../helpers/tmp.js';

const DEMO = fileURLToPath(new URL('../../examples/demo/', import.meta.url));
const LOADGEN = fileURLToPath(new URL('../fixtures/loadgen.mjs', import.meta.url));
const INSPECT = fileURLToPath(new URL('../fixtures/lab-inspect.mjs', import.meta.url));
const ETCD = ['e1', 'e2', 'e3'];
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

interface Inspection {
  nodes: string[];
  quorums: string[][];
  gateways: string[];
  replicas: Array<{ instanceId: string; nodeId: string; healthy: boolean }>;
  instances: Array<{ id: string; name: string; min: number }>;
}

const capable = canCreateNamespaces();

describe('many machines: replicas across hosts, partitions survived, nodes that come back', () => {
  const dir = tempDir('allegra-lab-');
  let lab: Lab;
  let registryUrl = '';
  const creds = join(dir.path, 'credentials');
  const daemons = new Map<string, ChildProcess>();
  const cliEnv: NodeJS.ProcessEnv = { ...process.env, ALLEGRA_HOME: join(dir.path, 'home') };
  const gatewayUrl = (name: string) => `http://${lab.machine(name).address}:8080`;

  const cli = (args: string[]) => {
    const r = lab.run('c1', [process.execPath, CLI, ...args], { env: cliEnv, timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`allegra ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  const inspect = (): Inspection =>
    JSON.parse(lab.run('c1', [process.execPath, INSPECT, registryUrl, join(creds, 'admin.json')], { timeoutMs: 20_000 }).stdout);

  /** Starts a long-running program on a machine and waits for a line of its stdout that says it is up. */
  const daemon = async (machine: string, argv: string[], ready: RegExp, env: NodeJS.ProcessEnv = process.env) => {
    const child = lab.spawn(machine, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    daemons.set(machine, child);
    let out = '';
    child.stderr?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4_000)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${machine} not ready: ${out}`)), 60_000);
      child.stdout?.on('data', (d: Buffer) => {
        out = (out + d.toString()).slice(-4_000);
        if (ready.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => reject(new Error(`${machine} exited ${code}: ${out}`)));
    });
    return child;
  };

  const startAgent = (name: string, i: number) =>
    daemon(
      name,
      [
        process.execPath,
        CLI,
        'agent',
        '--registry',
        registryUrl,
        '--registry-credentials',
        join(creds, 'agent.json'),
        '--listen',
        `${lab.machine(name).address}:7070`,
        '--ingress-port',
        '7071',
        '--data',
        join(dir.path, name),
        '--log',
        join(dir.path, `${name}.log`),
        '--uid-range',
        `${300_000 + i * 1_000}-${300_999 + i * 1_000}`,
      ],
      /serving RPC on/,
      { ...process.env, ALLEGRA_MACHINE_ID: name },
    );

  /** The cluster is whole: every live agent known, each app fully served by members of its quorum, both views agree. */
  const converged = async (liveAgents: number, liveGateways: string[]) =>
    waitFor(
      () => {
        const s = inspect();
        if (s.nodes.length !== liveAgents || s.gateways.length !== liveGateways.length) return undefined;
        for (const app of s.instances) {
          const quorum = s.quorums.flat();
          const healthy = s.replicas.filter((r) => r.instanceId === app.id && r.healthy && quorum.includes(r.nodeId));
          if (healthy.length < app.min) return undefined;
        }
        for (const gw of liveGateways) {
          const ready = lab.run('c1', [
            'curl',
            '-s',
            '-o',
            '/dev/null',
            '-w',
            '%{http_code}',
            `http://${lab.machine(gw).address}:9090/readyz`,
          ]);
          if (ready.stdout !== '200') return undefined;
        }
        return s;
      },
      { timeoutMs: 45_000, intervalMs: 500, what: 'the cluster to converge' },
    );

  beforeAll(async () => {
    // Under CI a host that cannot create namespaces is a failure, never a skip.
    if (!capable.ok) throw new Error(`the multi-machine test needs network namespaces: ${capable.reason}`);
    lab = Lab.create();
    for (const m of [...ETCD, ...AGENTS, ...GATEWAYS, 'c1']) await lab.addMachine(m, { impairable: m === 'a3' });
    mkdirSync(creds, { recursive: true });

    const cluster = ETCD.map((m) => `${m}=http://${lab.machine(m).address}:2380`).join(',');
    for (const m of ETCD) {
      const addr = lab.machine(m).address;
      lab.spawn(
        m,
        [
          'etcd',
          '--name',
          m,
          '--data-dir',
          join(dir.path, m),
          '--listen-client-urls',
          `http://${addr}:2379`,
          '--advertise-client-urls',
          `http://${addr}:2379`,
          '--listen-peer-urls',
          `http://${addr}:2380`,
          '--initial-advertise-peer-urls',
          `http://${addr}:2380`,
          '--initial-cluster',
          cluster,
          '--initial-cluster-state',
          'new',
          '--heartbeat-interval',
          '100',
          '--election-timeout',
          '1000',
        ],
        { stdio: 'ignore' },
      );
    }
    const endpoints = ETCD.map((m) => `${lab.machine(m).address}:2379`);
    registryUrl = `etcd://${endpoints.join(',')}`;
    await waitFor(() => lab.run('c1', ['etcdctl', '--endpoints', endpoints.join(','), 'endpoint', 'health']).code === 0, {
      timeoutMs: 20_000,
      what: 'etcd healthy',
    });
    cli(['registry', 'setup-auth', '--registry', registryUrl, '--credentials', creds]);
    lab.run('c1', [
      process.execPath,
      '--input-type=module',
      '-e',
      `import { openRegistry } from '${fileURLToPath(new URL('../../dist/registry/open.js', import.meta.url))}';
       const r = await openRegistry(${JSON.stringify(registryUrl)}, { role: 'admin', credentialsFile: ${JSON.stringify(join(creds, 'admin.json'))} });
       await r.put('config/network', JSON.stringify({ baseDomain: '${DOMAIN}', quorumSize: 3 }));
       await r.close(); process.exit(0);`,
    ]);

    await Promise.all(AGENTS.map((a, i) => startAgent(a, i)));
    await Promise.all(
      GATEWAYS.map((g) =>
        daemon(
          g,
          [
            process.execPath,
            CLI,
            'gateway',
            '--registry',
            registryUrl,
            '--registry-credentials',
            join(creds, 'gateway.json'),
            '--host',
            lab.machine(g).address,
            '--http',
            '8080',
            '--admin',
            '9090',
            '--log',
            join(dir.path, `${g}.log`),
          ],
          /gateway serving HTTP/,
          { ...process.env, ALLEGRA_MACHINE_ID: g },
        ),
      ),
    );

    cliEnv.ALLEGRA_RPC = AGENTS.map((a) => `http://${lab.machine(a).address}:7070`).join(',');
    cli(['keys', 'init']);
    await waitFor(() => inspect().quorums.some((q) => q.length >= 3), { timeoutMs: 20_000, what: 'a quorum' });
    for (const app of APPS) cli(['create', app, '--from', DEMO, '--cmd', 'node server.mjs']);
    await converged(AGENTS.length, GATEWAYS);
  }, 240_000);

  afterAll(async () => {
    await lab?.cleanup();
    // Nothing left behind: no namespace of this lab (and with them their links and processes).
    expect(lab?.existing() ?? []).toEqual([]);
    if (!process.env.KEEP_LAB) dir.cleanup();
  });

  it('serves every GET through live gateways while machines fail, and converges after each fault', async () => {
    const load = lab.spawn(
      'c1',
      [process.execPath, LOADGEN, '240000', '2', GATEWAYS.map(gatewayUrl).join(','), APPS.map((a) => `${a}.${DOMAIN}`).join(',')],
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
    await converged(AGENTS.length, GATEWAYS);

    // 2. Latency and loss on another agent's link.
    await lab.netem('a3', { delayMs: 40, jitterMs: 10, lossPct: 5 });
    await sleep(6_000);
    await lab.netem('a3', null);
    await converged(AGENTS.length, GATEWAYS);

    // 3. A gateway dies: requests to it fail (it is gone), the other serves everything.
    faults.gatewayKilled = Date.now();
    daemons.get('g2')?.kill('SIGKILL');
    await converged(AGENTS.length, ['g1']);

    // 4. An etcd member is partitioned from everyone; the other two keep the registry going.
    lab.cut('e3');
    await sleep(6_000);
    lab.restore('e3');
    // Every member answers again (as root: auth is on), the partitioned one caught up.
    const root = JSON.parse(readFileSync(join(creds, 'root.json'), 'utf8')) as { username: string; password: string };
    const endpoints = ETCD.map((m) => `${lab.machine(m).address}:2379`).join(',');
    await waitFor(
      () =>
        lab.run('c1', ['etcdctl', '--endpoints', endpoints, '--user', `${root.username}:${root.password}`, 'endpoint', 'health']).code ===
        0,
      { timeoutMs: 30_000, what: 'etcd whole again' },
    );
    await converged(AGENTS.length, ['g1']);
    await sleep(2_000);

    load.kill('SIGTERM');
    await finished;
    const samples = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Sample & { done?: boolean })
      .filter((s) => !s.done);
    const live = samples.filter((s) => s.gw === gatewayUrl('g1') || s.t < (faults.gatewayKilled as number) - 100);
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
