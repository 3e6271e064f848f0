/**
 * The gateway's routing core on Node, independent of any HTTP stack: host → route → quorum → live replicas
 * → their `UpstreamSet`. All state is in memory and kept current by registry watches; a request never waits
 * on the registry. What a route may serve is decided by `routeFromGrants` (protocol/grants.ts) over the
 * route table (router/route-table.ts): the same two pieces decide it for the Workers edge, in the bridge
 * that feeds the edge's route shards (edge/bridge.ts), so both runtimes serve exactly the same routes.
 */
import { routeFromGrants } from '../protocol/grants.js';
import { PREFIX } from '../protocol/keys.js';
import { verifyRecord } from '../protocol/records.js';
import type { Registry } from '../protocol/registry.js';
import { replicaRecord, routeRecord } from '../protocol/schemas.js';
import type { ReplicaRecord, RouteRecord } from '../protocol/types.js';
import { ClusterView } from '../registry/cluster-view.js';
import { jsonRecord, Mirror } from '../registry/mirror.js';
import { RouteTable } from '../router/route-table.js';
import { ingressEndpoint } from './dial.js';
import type { Resolution } from './engine.js';
import { type UpstreamInit, UpstreamSet } from './upstream.js';

/**
 * A route as the registry holds it, and what checking its grants against the instance's owner concluded:
 * the route to serve, or why not. Checked lazily on first use and again whenever the instance changes, so
 * a gateway holding a million routes verifies signatures only for the hosts that get traffic.
 */
interface RouteEntry {
  record: RouteRecord;
  checked?: RouteRecord | string;
}

export interface RoutingEvents {
  /** A replica endpoint is referenced by a route for the first time (start health-checking it). */
  onUpstreamAdded?: (endpoint: string) => void;
  /** An upstream endpoint is no longer referenced by any route: its connection pool can be closed. */
  onUpstreamGone?: (endpoint: string) => void;
  /** Active health checks: endpoints for which this returns true are kept out of rotation. */
  isDown?: (endpoint: string) => boolean;
  /** This gateway's machine id: replicas of nodes on other machines are reached through their ingress. */
  localMachine?: string;
  /** An instance went from no replica in rotation to at least one (the activator releases what it holds). */
  onServable?: (instanceId: string) => void;
}

export class RoutingCore {
  readonly view: ClusterView;
  private readonly routes: Mirror<RouteRecord>;
  private readonly replicas: Mirror<ReplicaRecord>;
  private readonly table = new RouteTable<RouteEntry>();
  /** Route entries by instance name, to re-check them when the instance record changes. */
  private readonly entriesOf = new Map<string, Set<RouteEntry>>();
  /** Replica records whose signature was checked, and against which node key. */
  private readonly trusted = new WeakMap<ReplicaRecord, string>();
  private refusedLogged = new Set<string>();
  /** Replica records grouped by instance id. */
  private readonly byInstance = new Map<string, Map<string, ReplicaRecord>>();
  private readonly sets = new Map<string, UpstreamSet>();
  /** Healthy, in-quorum replicas of each instance before the gateway's own health filter. */
  private readonly knownOf = new Map<string, UpstreamInit[]>();
  private readonly reasons = new Map<string, string>();
  private readonly liveEndpoints = new Map<string, number>();
  /** Routes per instance id, to tell whether any route can be served. */
  private readonly routedInstances = new Map<string, number>();
  private ready = false;

  constructor(
    registry: Registry,
    private readonly events: RoutingEvents = {},
    /** Told once per host why a route record was not served (forged or stale grants). */
    private readonly onRefusedRoute: (host: string, reason: string) => void = () => {},
  ) {
    this.view = new ClusterView(registry);
    this.routes = new Mirror(registry, PREFIX.routes, jsonRecord(routeRecord));
    this.replicas = new Mirror(registry, PREFIX.replicas, jsonRecord(replicaRecord));
  }

  async start(): Promise<this> {
    this.routes.onChange((changes) => {
      for (const c of changes) {
        const host = c.key.slice(PREFIX.routes.length);
        if (c.previous) this.countRoute(c.previous.instanceId, -1);
        if (c.value) this.countRoute(c.value.instanceId, 1);
        const old = this.table.get(host);
        if (old && old.record.host === host) this.entriesOf.get(old.record.instanceName)?.delete(old);
        if (c.value) {
          const entry: RouteEntry = { record: c.value };
          this.table.set(host, entry);
          let set = this.entriesOf.get(c.value.instanceName);
          if (!set) this.entriesOf.set(c.value.instanceName, (set = new Set()));
          set.add(entry);
        } else this.table.delete(host);
      }
    });
    // A route is only as good as the instance record its grants are checked against.
    this.view.instances.onChange((changes) => {
      for (const c of changes) {
        const name = (c.value ?? c.previous)?.name;
        if (name) for (const entry of this.entriesOf.get(name) ?? []) entry.checked = undefined;
      }
    });
    this.view.config.onChange(() => {
      for (const set of this.entriesOf.values()) for (const entry of set) entry.checked = undefined;
    });
    this.replicas.onChange((changes) => {
      const touched = new Set<string>();
      for (const c of changes) {
        const rec = c.value ?? c.previous;
        if (!rec) continue;
        let group = this.byInstance.get(rec.instanceId);
        if (!group) this.byInstance.set(rec.instanceId, (group = new Map()));
        if (c.value) group.set(c.key, c.value);
        else group.delete(c.key);
        if (group.size === 0) this.byInstance.delete(rec.instanceId);
        touched.add(rec.instanceId);
      }
      if (this.ready) for (const id of touched) this.rebuild(id);
    });
    // Quorum membership or placement changed: every instance's replica set may have changed.
    this.view.onChange(() => this.ready && this.rebuildAll());
    await Promise.all([this.view.start(), this.routes.start(), this.replicas.start()]);
    this.ready = true;
    this.rebuildAll();
    return this;
  }

  private countRoute(instanceId: string, delta: number): void {
    const n = (this.routedInstances.get(instanceId) ?? 0) + delta;
    if (n > 0) this.routedInstances.set(instanceId, n);
    else this.routedInstances.delete(instanceId);
  }

  /** Instances that have a route and at least one replica in rotation: what the gateway can serve. */
  get servableInstances(): number {
    let n = 0;
    for (const id of this.routedInstances.keys()) if ((this.sets.get(id)?.size ?? 0) > 0) n++;
    return n;
  }

  /** Display name of an instance (for metrics), or its id when the spec is not known. */
  instanceName(instanceId: string): string {
    for (const spec of this.view.instances.values()) if (spec.id === instanceId) return spec.name;
    return instanceId;
  }

  /** Every instance's replicas with its name, for per-replica metrics. */
  upstreamSets(): Array<{ instance: string; upstreams: UpstreamSet }> {
    const names = new Map<string, string>();
    for (const spec of this.view.instances.values()) names.set(spec.id, spec.name);
    return [...this.sets].map(([id, upstreams]) => ({ instance: names.get(id) ?? id, upstreams }));
  }

  /** Re-evaluates every instance (after an active health check changed an endpoint's state). */
  refresh(): void {
    if (this.ready) this.rebuildAll();
  }

  /** Replicas in rotation and known replicas of each instance, by instance name, for metrics. */
  upstreamCounts(): Array<{ instance: string; inRotation: number; known: number }> {
    const names = new Map<string, string>();
    for (const spec of this.view.instances.values()) names.set(spec.id, spec.name);
    return [...this.knownOf].map(([instanceId, known]) => ({
      instance: names.get(instanceId) ?? instanceId,
      inRotation: this.sets.get(instanceId)?.inRotation ?? 0,
      known: known.length,
    }));
  }

  private rebuildAll(): void {
    const ids = new Set([...this.byInstance.keys(), ...this.sets.keys()]);
    for (const id of ids) this.rebuild(id);
  }

  /** Recomputes the upstreams of one instance: healthy replicas on members of its current quorum. */
  private rebuild(instanceId: string): void {
    const group = this.byInstance.get(instanceId);
    const quorum = this.view.quorumOf(instanceId);
    const members = new Set(quorum?.members ?? []);
    const candidates: UpstreamInit[] = [];
    let unhealthy = 0;
    let outside = 0;
    let unsigned = 0;
    for (const r of group?.values() ?? []) {
      if (!members.has(r.nodeId)) outside++;
      else if (!this.isTrusted(r)) unsigned++;
      else if (!r.healthy) unhealthy++;
      else {
        const endpoint = this.reachableEndpoint(r);
        candidates.push({ id: `${r.nodeId}.${r.slot}@${endpoint}`, endpoint, nodeId: r.nodeId });
      }
    }
    // Replicas failing the gateway's own health checks leave rotation, unless all of them fail: then the
    // checks are more likely wrong than every replica, and trying them beats refusing (panic routing).
    const isDown = this.events.isDown;
    const before = new Set((this.knownOf.get(instanceId) ?? []).map((u) => u.endpoint));
    if (candidates.length === 0 && !group) {
      this.sets.delete(instanceId);
      this.knownOf.delete(instanceId);
    } else {
      const set = this.sets.get(instanceId) ?? new UpstreamSet();
      const wasServable = set.inRotation > 0;
      set.set(candidates, isDown);
      this.sets.set(instanceId, set);
      this.knownOf.set(instanceId, candidates);
      unhealthy += set.size - set.inRotation;
      if (!wasServable && set.inRotation > 0) this.events.onServable?.(instanceId);
    }
    const after = new Set(candidates.map((u) => u.endpoint));
    for (const e of after) {
      if (before.has(e)) continue;
      const n = (this.liveEndpoints.get(e) ?? 0) + 1;
      this.liveEndpoints.set(e, n);
      if (n === 1) this.events.onUpstreamAdded?.(e);
    }
    for (const e of before) {
      if (after.has(e)) continue;
      const n = (this.liveEndpoints.get(e) ?? 1) - 1;
      if (n > 0) this.liveEndpoints.set(e, n);
      else {
        this.liveEndpoints.delete(e);
        this.events.onUpstreamGone?.(e);
      }
    }
    this.reasons.set(
      instanceId,
      !quorum
        ? 'no quorum holds this instance'
        : unsigned > 0 && unhealthy === 0
          ? `${unsigned} replica record(s) not signed by their node`
          : unhealthy > 0
            ? `${unhealthy} replica(s) unhealthy, none healthy`
            : outside > 0
              ? 'replicas are moving between quorums'
              : 'instance has no running replica',
    );
  }

  /**
   * How this gateway reaches a replica: by the endpoint its node published when the node is on this machine
   * (a local socket), else through that node's ingress on its advertised address.
   */
  private reachableEndpoint(r: ReplicaRecord): string {
    const node = this.view.node(r.nodeId);
    if (!node?.machine || !node.ingress || node.machine === this.events.localMachine) return r.endpoint;
    return ingressEndpoint(r.nodeId, r.instanceId, r.slot);
  }

  /** Whether a replica record is signed by the node it names (whose key the node record holds). */
  private isTrusted(r: ReplicaRecord): boolean {
    const key = this.view.node(r.nodeId)?.publicKey;
    if (!key) return false;
    const checked = this.trusted.get(r);
    if (checked !== undefined) return checked === key;
    const ok = verifyRecord(r, key);
    this.trusted.set(r, ok ? key : '');
    return ok;
  }

  /**
   * The route the network serves for a route record, if its owner's grants allow it (for the certificate
   * manager: it orders certificates only for these).
   */
  servedRoute(record: RouteRecord): RouteRecord | undefined {
    const entry = this.table.get(record.host);
    if (!entry || entry.record.host !== record.host) return undefined;
    return this.route(record.host);
  }

  /** The route for a host if its owner's grants allow it; checked once per route or instance change. */
  private route(host: string): RouteRecord | undefined {
    const entry = this.table.get(host);
    if (!entry) return undefined;
    if (entry.checked === undefined) {
      entry.checked = routeFromGrants(entry.record, this.view.instance(entry.record.instanceName), this.view.network().baseDomain);
      if (typeof entry.checked === 'string' && !this.refusedLogged.has(host)) {
        if (this.refusedLogged.size > 10_000) this.refusedLogged = new Set();
        this.refusedLogged.add(host);
        this.onRefusedRoute(host, entry.checked);
      }
    }
    return typeof entry.checked === 'string' ? undefined : entry.checked;
  }

  resolve(host: string): Resolution {
    const route = this.route(host);
    if (!route) return { kind: 'no-route' };
    const upstreams = this.sets.get(route.instanceId);
    if (!upstreams || upstreams.size === 0)
      return { kind: 'no-replica', route, reason: this.reasons.get(route.instanceId) ?? 'instance has no running replica' };
    return { kind: 'ok', route, upstreams };
  }

  get isReady(): boolean {
    return this.ready;
  }

  get routeCount(): number {
    return this.table.size;
  }

  close(): void {
    this.view.close();
    this.routes.close();
    this.replicas.close();
  }
}
