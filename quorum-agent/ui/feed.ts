/**
 * What the UI watches: registry watches (mirrors) of replicas, member status, routes, certificates and
 * history heads beside the agent's cluster view, turned into (a) change notices per instance name and for
 * the network, pushed to every open dashboard within milliseconds of the registry event, and (b) a bounded
 * event list per instance (deploys, scaling, state changes, replica transitions, cold starts) and for the
 * network (ejections, failovers), kept in memory from when the feed started.
 *
 * Started on first use: an agent nobody opens the UI on holds none of it.
 */
import { keys, PREFIX } from '../../protocol/keys.js';
import type { Registry, Watch } from '../../protocol/registry.js';
import { certRecord, certStatusRecord, instanceStatusRecord, replicaRecord, routeRecord, scaleRecord } from '../../protocol/schemas.js';
import type { CertStatusRecord, InstanceSpec, InstanceStatusRecord, ReplicaRecord, ScaleRecord } from '../../protocol/types.js';
import type { ClusterView } from '../../registry/cluster-view.js';
import { jsonRecord, Mirror, type MirrorChange } from '../../registry/mirror.js';

export interface UiEvent {
  t: number;
  kind: 'created' | 'deploy' | 'scale' | 'state' | 'replica' | 'cold-start' | 'keys' | 'revoke' | 'domain' | 'ejection' | 'failover';
  text: string;
}

export interface Change {
  /** Names of instances whose record, replicas, status, routes or history changed. */
  instances: Set<string>;
  /** Nodes, quorums, gateways, certificates or network settings changed. */
  network: boolean;
}

export interface RouteSummary {
  host: string;
  instanceId: string;
  instanceName: string;
  kind: 'network' | 'custom';
}
export interface CertSummary {
  host: string;
  notAfter: number;
  issuer: string;
  issuedAt: number;
}

const EVENTS_PER_INSTANCE = 200;
const NETWORK_EVENTS = 200;
/** Changes within this window reach the browser as one notice. */
const COALESCE_MS = 25;

export class UiFeed {
  readonly replicas: Mirror<ReplicaRecord>;
  readonly members: Mirror<InstanceStatusRecord>;
  readonly routes: Mirror<RouteSummary>;
  readonly certs: Mirror<CertSummary>;
  readonly certStatus: Mirror<CertStatusRecord>;
  /** The elected autoscaler's decisions. */
  readonly scale: Mirror<ScaleRecord>;
  private history: Watch | null = null;
  private readonly events = new Map<string, UiEvent[]>();
  private readonly networkEvents: UiEvent[] = [];
  private readonly listeners = new Set<(change: Change) => void>();
  private pending: Change | null = null;
  private started: Promise<void> | null = null;

  constructor(
    private readonly registry: Registry,
    private readonly view: ClusterView,
  ) {
    this.replicas = new Mirror(registry, PREFIX.replicas, jsonRecord(replicaRecord));
    this.members = new Mirror(registry, PREFIX.instanceStatus, jsonRecord(instanceStatusRecord));
    // Only what the UI shows: a route's grants and a certificate's chain stay out of memory.
    this.routes = new Mirror(registry, PREFIX.routes, (raw) => {
      const r = jsonRecord(routeRecord)(raw);
      return r && { host: r.host, instanceId: r.instanceId, instanceName: r.instanceName, kind: r.kind };
    });
    this.certs = new Mirror<CertSummary>(registry, PREFIX.certs, (raw) => {
      const c = jsonRecord(certRecord)(raw);
      return c && { host: c.host, notAfter: c.notAfter, issuer: c.issuer, issuedAt: c.issuedAt };
    });
    this.certStatus = new Mirror(registry, PREFIX.certStatus, jsonRecord(certStatusRecord));
    this.scale = new Mirror(registry, PREFIX.scale, jsonRecord(scaleRecord));
  }

  start(): Promise<void> {
    this.started ??= this.begin();
    return this.started;
  }

  private async begin(): Promise<void> {
    const nameOfId = (id: string) => this.view.instanceById(id)?.name;
    this.view.instances.onChange((changes) => {
      for (const c of changes) this.specChanged(c);
    });
    for (const mirror of [this.view.nodes, this.view.quorums, this.view.gateways, this.view.config])
      mirror.onChange(() => this.notify(undefined, true));
    this.replicas.onChange((changes) => {
      for (const c of changes) {
        const id = (c.value ?? c.previous)?.instanceId;
        const name = id && nameOfId(id);
        if (!name) continue;
        this.replicaChanged(name, c);
        this.notify(name);
      }
    });
    this.members.onChange((changes) => {
      for (const c of changes) {
        const name = nameOfId((c.value ?? c.previous)?.instanceId ?? '');
        if (name) this.notify(name);
      }
    });
    this.routes.onChange((changes) => {
      for (const c of changes) {
        const r = c.value ?? c.previous;
        if (!r) continue;
        if (c.value && !c.previous && r.kind === 'custom') this.record(r.instanceName, 'domain', `domain ${r.host} routed`);
        this.notify(r.instanceName, true);
      }
    });
    this.scale.onChange((changes) => {
      for (const c of changes) {
        const name = nameOfId((c.value ?? c.previous)?.instanceId ?? '');
        if (!name) continue;
        if (c.value && c.previous && c.value.desired !== c.previous.desired)
          this.record(name, 'scale', `autoscaler: ${c.previous.desired} → ${c.value.desired} replicas (${c.value.reason})`);
        this.notify(name);
      }
    });
    const certChanged = (changes: MirrorChange<{ host: string }>[]) => {
      for (const c of changes) {
        const host = (c.value ?? c.previous)?.host;
        const route = host ? this.routes.get(keys.route(host)) : undefined;
        this.notify(route?.instanceName, true);
      }
    };
    this.certs.onChange(certChanged);
    this.certStatus.onChange(certChanged);
    await Promise.all(
      [this.replicas, this.members, this.routes, this.certs, this.certStatus, this.scale].map((m) => (m as Mirror<unknown>).start()),
    );
    // Every operation writes its history head: a new record is a change of that instance (deploys, keys…).
    this.history = this.registry.watch(PREFIX.history, (events) => {
      for (const e of events) {
        if (!e.key.endsWith('/head')) continue;
        const name = nameOfId(e.key.slice(PREFIX.history.length, -'/head'.length));
        if (name) this.notify(name);
      }
    });
  }

  private specChanged(c: MirrorChange<InstanceSpec>): void {
    const now = c.value;
    const was = c.previous;
    const name = (now ?? was)?.name;
    if (!name) return;
    if (now && !was) this.record(name, 'created', `instance ${name} created`);
    else if (!now) this.events.delete(name);
    else if (was) {
      if (now.version !== was.version)
        this.record(name, 'deploy', `version ${now.version} deployed (${now.artifact?.sha256.slice(0, 12) ?? 'no code'})`);
      if (now.state !== was.state) this.record(name, 'state', now.state === 'running' ? 'started' : 'stopped');
      if (now.replicas.min !== was.replicas.min || now.replicas.max !== was.replicas.max)
        this.record(name, 'scale', `replicas ${was.replicas.min}–${was.replicas.max} → ${now.replicas.min}–${now.replicas.max}`);
      if (now.authorized.length !== was.authorized.length) this.record(name, 'keys', `team keys: ${now.authorized.length}`);
      if (now.immutable && !was.immutable) this.record(name, 'revoke', 'ownership revoked: the instance is immutable');
    }
    this.notify(name);
  }

  private replicaChanged(name: string, c: MirrorChange<ReplicaRecord>): void {
    const r = c.value;
    const p = c.previous;
    const where = `replica ${(r ?? p)?.slot} on ${(r ?? p)?.nodeId}`;
    if (!r) return this.record(name, 'replica', `${where} gone`);
    if (!p)
      return this.record(
        name,
        'replica',
        `${where} ${r.endpoint === '' ? `not running${r.lastError ? `: ${r.lastError}` : ''}` : 'started'}`,
      );
    if (r.restarts > p.restarts) this.record(name, 'replica', `${where} restarted${r.lastError ? ` (${r.lastError})` : ''}`);
    else if (r.healthy !== p.healthy)
      this.record(name, 'replica', `${where} ${r.healthy ? 'healthy' : `unhealthy${r.lastError ? `: ${r.lastError}` : ''}`}`);
    if (r.version !== p.version) this.record(name, 'replica', `${where} runs version ${r.version}`);
  }

  /** Cold starts the gateways counted for an instance (from the metrics sampler). */
  coldStarts(name: string, count: number): void {
    this.record(name, 'cold-start', `${count} request${count === 1 ? '' : 's'} held while the instance woke up (cold start)`);
    this.notify(name);
  }

  /** Network-wide counters from the gateways' metrics. */
  gatewayCounters(ejections: number, failovers: number): void {
    const t = Date.now();
    if (ejections > 0)
      push(
        this.networkEvents,
        { t, kind: 'ejection', text: `${ejections} replica${ejections === 1 ? '' : 's'} ejected by the gateways` },
        NETWORK_EVENTS,
      );
    if (failovers > 0)
      push(
        this.networkEvents,
        { t, kind: 'failover', text: `${failovers} request${failovers === 1 ? '' : 's'} retried on another replica` },
        NETWORK_EVENTS,
      );
    this.notify(undefined, true);
  }

  eventsOf(name: string): UiEvent[] {
    return this.events.get(name) ?? [];
  }

  get gatewayEvents(): UiEvent[] {
    return this.networkEvents;
  }

  private record(name: string, kind: UiEvent['kind'], text: string): void {
    let list = this.events.get(name);
    if (!list) this.events.set(name, (list = []));
    push(list, { t: Date.now(), kind, text }, EVENTS_PER_INSTANCE);
  }

  /** Calls `listener` with coalesced changes until the returned function is called. */
  subscribe(listener: (change: Change) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private notify(name: string | undefined, network = false): void {
    if (this.listeners.size === 0) return;
    if (!this.pending) {
      this.pending = { instances: new Set(), network: false };
      setTimeout(() => {
        const change = this.pending as Change;
        this.pending = null;
        for (const l of this.listeners) l(change);
      }, COALESCE_MS).unref();
    }
    if (name) this.pending.instances.add(name);
    if (network) this.pending.network = true;
  }

  close(): void {
    this.history?.close();
    for (const m of [this.replicas, this.members, this.routes, this.certs, this.certStatus, this.scale]) m.close();
  }
}

function push(list: UiEvent[], e: UiEvent, max: number): void {
  list.push(e);
  if (list.length > max) list.splice(0, list.length - max);
}
