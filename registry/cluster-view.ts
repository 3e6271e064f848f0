/**
 * What every agent and gateway needs to know about the cluster, held in memory from registry watches:
 * live nodes, quorums and instances, and the instance → quorum placement computed from them. Because the
 * placement is a pure function of registry state, every holder of a view computes the same answer.
 */
import { keys, PREFIX } from '../protocol/keys.js';
import type { Registry } from '../protocol/registry.js';
import { gatewayRecord, instanceSpec, networkConfig, nodeRecord, quorumRecord } from '../protocol/schemas.js';
import type { GatewayRecord, InstanceSpec, NetworkConfig, NodeRecord, QuorumRecord } from '../protocol/types.js';
import { Placement } from '../router/placement.js';
import { jsonRecord, Mirror } from './mirror.js';

export const DEFAULT_NETWORK: NetworkConfig = { baseDomain: 'localhost', quorumSize: 3 };

export class ClusterView {
  readonly nodes: Mirror<NodeRecord>;
  readonly quorums: Mirror<QuorumRecord>;
  readonly instances: Mirror<InstanceSpec>;
  readonly config: Mirror<NetworkConfig>;
  /** Live gateways and their keys (node ingresses admit only these). */
  readonly gateways: Mirror<GatewayRecord>;
  private placement: Placement = new Placement([]);
  private readonly listeners: Array<() => void> = [];

  constructor(readonly registry: Registry) {
    this.nodes = new Mirror(registry, PREFIX.nodes, jsonRecord(nodeRecord));
    this.quorums = new Mirror(registry, PREFIX.quorums, jsonRecord(quorumRecord));
    this.instances = new Mirror(registry, PREFIX.instances, jsonRecord(instanceSpec));
    this.config = new Mirror(registry, PREFIX.config, (raw, key) => (key === keys.network() ? jsonRecord(networkConfig)(raw) : undefined));
    this.gateways = new Mirror(registry, PREFIX.gateways, jsonRecord(gatewayRecord));
  }

  async start(): Promise<this> {
    const rebuild = () => {
      this.rebuildPlacement();
      this.changed();
    };
    this.quorums.onChange(rebuild);
    this.instances.onChange((changes) => {
      this.byId = null;
      // Placement depends only on the set of instance ids, not on spec contents.
      if (changes.some((c) => c.value?.id !== c.previous?.id)) this.rebuildPlacement();
      this.changed();
    });
    this.nodes.onChange(() => this.changed());
    this.config.onChange(() => this.changed());
    await Promise.all([this.nodes.start(), this.quorums.start(), this.instances.start(), this.config.start(), this.gateways.start()]);
    this.byId = null;
    this.rebuildPlacement();
    return this;
  }

  private rebuildPlacement(): void {
    const quorums = [...this.quorums.values()].map((q) => ({ id: q.id, capacity: this.quorumCapacity(q) }));
    this.placement = new Placement(
      quorums,
      [...this.instances.values()].map((s) => s.id),
    );
  }

  /**
   * The controller records a quorum's capacity in the quorum record, so placement depends only on
   * quorum records and instance ids: a node's heartbeat never moves instances.
   */
  private quorumCapacity(q: QuorumRecord): number {
    return q.members.length === 0 ? 0 : (q.capacity ?? q.members.length);
  }

  network(): NetworkConfig {
    return this.config.get(keys.network()) ?? DEFAULT_NETWORK;
  }

  quorumOf(instanceId: string): QuorumRecord | undefined {
    const id = this.placement.quorumOf(instanceId);
    return id === undefined ? undefined : this.quorums.get(keys.quorum(id));
  }

  instance(name: string): InstanceSpec | undefined {
    return this.instances.get(keys.instance(name));
  }

  /** Instances by id (the mirror is keyed by name), rebuilt on first use after a change. */
  private byId: Map<string, InstanceSpec> | null = null;

  instanceById(id: string): InstanceSpec | undefined {
    if (!this.byId) this.byId = new Map([...this.instances.values()].map((s) => [s.id, s]));
    return this.byId.get(id);
  }

  node(id: string): NodeRecord | undefined {
    return this.nodes.get(keys.node(id));
  }

  /** Whether a live gateway of the network holds this key. */
  isGatewayKey(publicKey: string): boolean {
    for (const g of this.gateways.values()) if (g.publicKey === publicKey) return true;
    return false;
  }

  nodeByKey(publicKey: string): NodeRecord | undefined {
    for (const n of this.nodes.values()) if (n.publicKey === publicKey) return n;
    return undefined;
  }

  /** Called after any change of the view, once the change has been applied. */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }

  close(): void {
    for (const m of [this.nodes, this.quorums, this.instances, this.config, this.gateways]) m.close();
  }
}
