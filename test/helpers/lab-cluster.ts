/**
 * An Allegra cluster on lab machines (netns.ts): etcd members with auth, agents and gateways each on a machine
 * of its own, a client machine for the CLI and for load, all as real processes. Shared by the multi-machine
 * tests. `cleanup()` stops everything and removes the lab (also after a failure).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from './cli.js';
import { canCreateNamespaces, Lab } from './netns.js';
import { tempDir, waitFor } from './tmp.js';

const INSPECT = fileURLToPath(new URL('../fixtures/lab-inspect.mjs', import.meta.url));
const OPEN_REGISTRY = fileURLToPath(new URL('../../dist/registry/open.js', import.meta.url));

export interface Inspection {
  nodes: string[];
  quorums: string[][];
  gateways: string[];
  replicas: Array<{ instanceId: string; nodeId: string; healthy: boolean }>;
  instances: Array<{ id: string; name: string; min: number }>;
}

export interface LabClusterOptions {
  etcd: string[];
  agents: string[];
  gateways: string[];
  /** Machines cabled through an impairment bridge (delay, loss). */
  impairable?: string[];
  baseDomain: string;
}

export class LabCluster {
  readonly lab: Lab;
  readonly dir = tempDir('allegra-lab-');
  readonly creds: string;
  readonly daemons = new Map<string, ChildProcess>();
  readonly cliEnv: NodeJS.ProcessEnv;
  registryUrl = '';

  private constructor(readonly opts: LabClusterOptions) {
    // Under CI a host that cannot create namespaces is a failure, never a skip.
    const capable = canCreateNamespaces();
    if (!capable.ok) throw new Error(`multi-machine tests need network namespaces: ${capable.reason}`);
    this.lab = Lab.create();
    this.creds = join(this.dir.path, 'credentials');
    this.cliEnv = { ...process.env, ALLEGRA_HOME: join(this.dir.path, 'home') };
  }

  static async start(opts: LabClusterOptions): Promise<LabCluster> {
    const c = new LabCluster(opts);
    try {
      await c.boot();
    } catch (err) {
      await c.cleanup();
      throw err;
    }
    return c;
  }

  address(machine: string): string {
    return this.lab.machine(machine).address;
  }

  gatewayUrl(name: string): string {
    return `http://${this.address(name)}:8080`;
  }

  private async boot(): Promise<void> {
    const { lab } = this;
    for (const m of [...this.opts.etcd, ...this.opts.agents, ...this.opts.gateways, 'c1'])
      await lab.addMachine(m, { impairable: this.opts.impairable?.includes(m) ?? false });
    mkdirSync(this.creds, { recursive: true });
    const cluster = this.opts.etcd.map((m) => `${m}=http://${this.address(m)}:2380`).join(',');
    for (const m of this.opts.etcd) {
      const addr = this.address(m);
      lab.spawn(
        m,
        [
          'etcd',
          '--name',
          m,
          '--data-dir',
          join(this.dir.path, m),
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
    this.registryUrl = `etcd://${this.etcdEndpoints()}`;
    await waitFor(() => lab.run('c1', ['etcdctl', '--endpoints', this.etcdEndpoints(), 'endpoint', 'health']).code === 0, {
      timeoutMs: 20_000,
      what: 'etcd healthy',
    });
    this.cli(['registry', 'setup-auth', '--registry', this.registryUrl, '--credentials', this.creds]);
    this.admin(`await r.put('config/network', JSON.stringify({ baseDomain: '${this.opts.baseDomain}', quorumSize: 3 }));`);
    await Promise.all(this.opts.agents.map((a) => this.startAgent(a)));
    await Promise.all(this.opts.gateways.map((g) => this.startGateway(g)));
    this.cliEnv.ALLEGRA_RPC = this.opts.agents.map((a) => `http://${this.address(a)}:7070`).join(',');
    this.cli(['keys', 'init']);
    await waitFor(() => this.inspect().quorums.some((q) => q.length >= 3), { timeoutMs: 20_000, what: 'a quorum' });
  }

  etcdEndpoints(): string {
    return this.opts.etcd.map((m) => `${this.address(m)}:2379`).join(',');
  }

  /** Runs a registry script as admin on the client machine (`r` is the open registry). */
  admin(script: string): string {
    const r = this.lab.run('c1', [
      process.execPath,
      '--input-type=module',
      '-e',
      `import { openRegistry } from '${OPEN_REGISTRY}';
       const r = await openRegistry(${JSON.stringify(this.registryUrl)}, { role: 'admin', credentialsFile: ${JSON.stringify(join(this.creds, 'admin.json'))} });
       ${script}
       await r.close(); process.exit(0);`,
    ]);
    if (r.code !== 0) throw new Error(`admin script failed: ${r.stderr}`);
    return r.stdout;
  }

  cli(args: string[]): string {
    const r = this.lab.run('c1', [process.execPath, CLI, ...args], { env: this.cliEnv, timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`allegra ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  inspect(): Inspection {
    return JSON.parse(
      this.lab.run('c1', [process.execPath, INSPECT, this.registryUrl, join(this.creds, 'admin.json')], { timeoutMs: 20_000 }).stdout,
    );
  }

  /** Starts a long-running program on a machine and waits for a line of its stdout that says it is up. */
  private async daemon(machine: string, argv: string[], ready: RegExp, env: NodeJS.ProcessEnv): Promise<ChildProcess> {
    const child = this.lab.spawn(machine, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.daemons.set(machine, child);
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
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${machine} exited ${code}: ${out}`));
      });
    });
    return child;
  }

  /** Starts (or restarts, as the same node: same data dir) the agent of a machine. */
  startAgent(name: string): Promise<ChildProcess> {
    const i = this.opts.agents.indexOf(name);
    return this.daemon(
      name,
      [
        process.execPath,
        CLI,
        'agent',
        '--registry',
        this.registryUrl,
        '--registry-credentials',
        join(this.creds, 'agent.json'),
        '--listen',
        `${this.address(name)}:7070`,
        '--ingress-port',
        '7071',
        '--data',
        join(this.dir.path, name),
        '--log',
        join(this.dir.path, `${name}.log`),
        '--uid-range',
        `${300_000 + i * 1_000}-${300_999 + i * 1_000}`,
      ],
      /serving RPC on/,
      { ...process.env, ALLEGRA_MACHINE_ID: name },
    );
  }

  startGateway(name: string): Promise<ChildProcess> {
    return this.daemon(
      name,
      [
        process.execPath,
        CLI,
        'gateway',
        '--registry',
        this.registryUrl,
        '--registry-credentials',
        join(this.creds, 'gateway.json'),
        '--host',
        this.address(name),
        '--http',
        '8080',
        '--admin',
        '9090',
        '--log',
        join(this.dir.path, `${name}.log`),
      ],
      /gateway serving HTTP/,
      { ...process.env, ALLEGRA_MACHINE_ID: name },
    );
  }

  /** SIGKILLs a machine's daemon and waits until it is gone. */
  async kill(machine: string): Promise<void> {
    const child = this.daemons.get(machine);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
  }

  /** The cluster is whole: every live agent known, each app fully served by quorum members, gateways ready. */
  converged(liveAgents: number, liveGateways: string[]): Promise<Inspection> {
    return waitFor(
      () => {
        const s = this.inspect();
        if (s.nodes.length !== liveAgents || s.gateways.length !== liveGateways.length) return undefined;
        const members = s.quorums.flat();
        for (const app of s.instances) {
          const healthy = s.replicas.filter((r) => r.instanceId === app.id && r.healthy && members.includes(r.nodeId));
          if (healthy.length < app.min) return undefined;
        }
        for (const gw of liveGateways) {
          const ready = this.lab.run('c1', [
            'curl',
            '-s',
            '-o',
            '/dev/null',
            '-w',
            '%{http_code}',
            `http://${this.address(gw)}:9090/readyz`,
          ]);
          if (ready.stdout !== '200') return undefined;
        }
        return s;
      },
      { timeoutMs: 45_000, intervalMs: 500, what: 'the cluster to converge' },
    );
  }

  /** Whether every etcd member answers (as root: auth is on). */
  etcdHealthy(): boolean {
    const root = JSON.parse(readFileSync(join(this.creds, 'root.json'), 'utf8')) as { username: string; password: string };
    return (
      this.lab.run('c1', [
        'etcdctl',
        '--endpoints',
        this.etcdEndpoints(),
        '--user',
        `${root.username}:${root.password}`,
        'endpoint',
        'health',
      ]).code === 0
    );
  }

  async cleanup(): Promise<void> {
    await this.lab.cleanup();
    if (!process.env.KEEP_LAB) this.dir.cleanup();
  }
}
