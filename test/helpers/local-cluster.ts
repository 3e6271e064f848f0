/**
 * Agents and a gateway started as separate daemons (the built CLI) on one embedded registry, with the
 * network's quorum size set first: what the suites about one member's loss (volumes, VMs) run on. Every
 * daemon that did start is kept in `agents`/`gateway` as soon as it is up, also when another one failed,
 * so `stop()` in afterAll ends them all.
 */
import { join } from 'node:path';
import { type Daemon, startDaemon, stopDaemon } from '../../cli/children.js';
import { keys, PREFIX } from '../../protocol/keys.js';
import type { Registry } from '../../protocol/registry.js';
import { openRegistry } from '../../registry/open.js';
import { CLI } from './cli.js';
import { waitFor } from './tmp.js';

export interface LocalClusterOptions {
  agents: number;
  quorumSize: number;
  /** First uid of agent 0's sandbox range; each agent gets the next 1000. */
  uidBase: number;
  /** Arguments added to agent i's command line (drivers, image cache …). */
  agentExtra?: (i: number) => string[];
}

export class LocalCluster {
  registry: Registry | undefined;
  readonly agents: Daemon[] = [];
  gateway: Daemon | undefined;

  private options: LocalClusterOptions | undefined;

  constructor(readonly dir: string) {}

  get registryUrl(): string {
    return `embedded:${join(this.dir, 'registry')}`;
  }

  /** The first agent still running (the CLI's way in after one was lost). */
  alive(): Daemon | undefined {
    return this.agents.find((d) => d.child.exitCode === null && d.child.signalCode === null);
  }

  /** Agent i's command line: the same data directory (and so the same node) every time. */
  agentArgs(i: number): string[] {
    const o = this.options;
    if (!o) throw new Error('the cluster has not been started');
    return [
      'agent',
      '--registry',
      this.registryUrl,
      '--listen',
      '127.0.0.1:0',
      '--data',
      join(this.dir, `agent-${i}`),
      '--log',
      join(this.dir, `agent-${i}.log`),
      '--uid-range',
      `${o.uidBase + i * 1_000}+1000`,
      ...(o.agentExtra?.(i) ?? []),
    ];
  }

  /** Starts agent i again (after it was killed): the machine coming back. */
  async restart(i: number): Promise<Daemon> {
    const d = await startDaemon(`agent-${i}`, this.agentArgs(i), 30_000, CLI);
    this.agents[i] = d;
    return d;
  }

  async start(o: LocalClusterOptions): Promise<void> {
    this.options = o;
    this.registry = await openRegistry(this.registryUrl, { role: 'admin' });
    await this.registry.put(keys.network(), JSON.stringify({ baseDomain: 'localhost', quorumSize: o.quorumSize }));
    // Started together: each daemon's start is mostly Node loading the CLI, which the two cores share.
    const started = Array.from({ length: o.agents }, (_, i) => startDaemon(`agent-${i}`, this.agentArgs(i), 30_000, CLI));
    const gatewayArgs = ['gateway', '--registry', this.registryUrl, '--http', '0', '--https', '0', '--admin', '0'];
    const gatewayStarted = startDaemon('gateway', [...gatewayArgs, '--log', join(this.dir, 'gateway.log')], 30_000, CLI);
    const [agentResults, gatewayResult] = await Promise.all([Promise.allSettled(started), Promise.allSettled([gatewayStarted])]);
    for (const r of agentResults) if (r.status === 'fulfilled') this.agents.push(r.value);
    if (gatewayResult[0]?.status === 'fulfilled') this.gateway = gatewayResult[0].value;
    const failed = [...agentResults, ...gatewayResult].find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const ids = this.agents.map((a) => String(a.ready.node));
    const registry = this.registry;
    await waitFor(
      async () => {
        const { items } = await registry.list(PREFIX.quorums);
        return ids.every((id) => items.some((kv) => (JSON.parse(kv.value) as { members: string[] }).members.includes(id)));
      },
      { timeoutMs: 20_000, what: `a quorum of the ${o.agents} agents` },
    );
  }

  async stop(graceMs = 5_000): Promise<void> {
    const daemons = [this.gateway, ...this.agents].filter((d): d is Daemon => d !== undefined);
    await Promise.allSettled(daemons.map((d) => stopDaemon(d, graceMs)));
    await this.registry?.close();
  }
}
