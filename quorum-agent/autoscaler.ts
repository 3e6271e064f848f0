/**
 * The autoscaler: exactly one agent at a time (`leaders/autoscaler`, under its lease, like the quorum
 * controller) turns load signals into desired replica counts for every autoscaled instance and writes them
 * to `scale/<instanceId>`, each write a transaction guarded by "the leader key still holds my id", so a
 * deposed leader cannot overwrite its successor. Agents place that many slots over the quorum members.
 *
 * Load signals: each gateway's per-instance concurrency, requests per second and held requests
 * (`load/<instance>/<gateway>`, a tick each), and what agents report about their replicas
 * (`instance-status/…`, wasm replicas' queues). The arithmetic is Knative's KPA (router/kpa.ts), once a
 * tick; a request held for an instance without a replica is decided on at once (the activator's wake-up).
 * The leader mirrors load signals only while it leads.
 */
import type { Logger } from 'pino';
import { keys, PREFIX } from '../protocol/keys.js';
import { createIfAbsent, type Registry, type Watch } from '../protocol/registry.js';
import { AUTOSCALE, instanceStatusRecord, loadRecord, replicaRecord, scaleRecord } from '../protocol/schemas.js';
import type { InstanceSpec, InstanceStatusRecord, LoadRecord, ReplicaRecord, ScaleRecord } from '../protocol/types.js';
import type { ClusterView } from '../registry/cluster-view.js';
import { jsonRecord, Mirror } from '../registry/mirror.js';
import { KPA_DEFAULTS, type KpaSettings, KpaState } from '../router/kpa.js';
import { autoscaled } from '../router/scale.js';
import { SerialPass } from './serial-pass.js';

const ROLE = 'autoscaler';

export interface AutoscalerOptions {
  registry: Registry;
  view: ClusterView;
  nodeId: string;
  leaseId: () => string;
  log: Logger;
  /** How often every autoscaled instance gets a sample and a decision (Knative: 2 s; here 1 s). */
  tickMs?: number;
  /** Load signals not refreshed for this long are ignored (their gateway stopped writing). */
  staleMs?: number;
}

/** The KPA settings of an instance, from its spec and the network defaults. */
export function kpaSettings(spec: InstanceSpec): KpaSettings {
  const a = spec.autoscale;
  const stableWindowMs = (a?.windowSeconds ?? AUTOSCALE.windowSeconds.default) * 1000;
  return {
    target: a?.target ?? AUTOSCALE.target.default,
    utilization: KPA_DEFAULTS.utilization,
    stableWindowMs,
    panicWindowMs: stableWindowMs * KPA_DEFAULTS.panicWindowFraction,
    panicThreshold: KPA_DEFAULTS.panicThreshold,
    maxScaleUpRate: KPA_DEFAULTS.maxScaleUpRate,
    maxScaleDownRate: KPA_DEFAULTS.maxScaleDownRate,
    idleMs: (a?.idleSeconds ?? AUTOSCALE.idleSeconds.default) * 1000,
    min: spec.replicas.min,
    max: spec.replicas.max,
  };
}

interface Mirrors {
  loads: Mirror<LoadRecord>;
  statuses: Mirror<InstanceStatusRecord>;
  replicas: Mirror<ReplicaRecord>;
  scales: Mirror<ScaleRecord>;
}

/** What one decision looks at for one instance. */
interface Signals {
  loads: Array<[string, LoadRecord]>;
  statuses: InstanceStatusRecord[];
  replicas: ReplicaRecord[];
}

/** Records of `<prefix><instanceId>/…` keys grouped by instance id: one pass per tick, not one per instance. */
function byInstance<T>(mirror: Mirror<T>, only?: string): Map<string, Array<[string, T]>> {
  const out = new Map<string, Array<[string, T]>>();
  for (const [key, value] of mirror.entries()) {
    const rest = key.slice(mirror.prefix.length);
    const id = rest.slice(0, rest.indexOf('/'));
    if (only !== undefined && id !== only) continue;
    let list = out.get(id);
    if (!list) out.set(id, (list = []));
    list.push([key, value]);
  }
  return out;
}

export class Autoscaler {
  private leading = false;
  private readonly leaderKey = keys.leader(ROLE);
  private readonly election: SerialPass;
  private watch: Watch | null = null;
  private timer: NodeJS.Timeout | null = null;
  private mirrors: Mirrors | null = null;
  private readonly states = new Map<string, KpaState>();
  /** When each load record last arrived, by our clock (gateways' clocks are theirs). */
  private readonly arrived = new Map<string, number>();
  /** Instances decided on out of turn (a held request), at most once per tick each. */
  private readonly woken = new Set<string>();
  private stopped = false;

  constructor(private readonly opts: AutoscalerOptions) {
    this.election = new SerialPass(
      () => this.elect(),
      (err) => this.opts.log.warn({ err }, 'autoscaler election failed'),
    );
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.watch = this.opts.registry.watch(PREFIX.leaders, () => this.election.request());
    this.election.request();
  }

  /** Try again now (after the agent's lease was re-granted). */
  kick(): void {
    this.election.request();
  }

  private async elect(): Promise<void> {
    if (this.stopped) return;
    const current = await this.opts.registry.get(this.leaderKey);
    let leading: boolean;
    if (!current) leading = await createIfAbsent(this.opts.registry, this.leaderKey, this.opts.nodeId, this.opts.leaseId());
    else leading = current.value === this.opts.nodeId;
    if (leading && !this.leading) await this.lead();
    else if (!leading && this.leading) this.follow();
  }

  private async lead(): Promise<void> {
    const { registry } = this.opts;
    const mirrors: Mirrors = {
      loads: new Mirror(registry, PREFIX.load, jsonRecord(loadRecord)),
      statuses: new Mirror(registry, PREFIX.instanceStatus, jsonRecord(instanceStatusRecord)),
      replicas: new Mirror(registry, PREFIX.replicas, jsonRecord(replicaRecord)),
      scales: new Mirror(registry, PREFIX.scale, jsonRecord(scaleRecord)),
    };
    mirrors.loads.onChange((changes) => {
      const now = Date.now();
      for (const c of changes) {
        if (c.value) this.arrived.set(c.key, now);
        else this.arrived.delete(c.key);
        // A request held for an instance that has no replica: decide now, not at the next tick.
        if (c.value && c.value.held > 0 && !(c.previous && c.previous.held > 0)) this.wake(c.value.instanceId);
      }
    });
    try {
      await Promise.all(Object.values(mirrors).map((m) => m.start()));
    } catch (err) {
      for (const m of Object.values(mirrors)) m.close();
      throw err;
    }
    this.mirrors = mirrors;
    this.leading = true;
    this.states.clear();
    this.opts.log.info('elected autoscaler');
    const now = Date.now();
    for (const [key] of mirrors.loads.entries()) this.arrived.set(key, now);
    this.timer = setInterval(
      () => void this.tick().catch((err) => this.opts.log.warn({ err }, 'autoscaler tick failed')),
      this.opts.tickMs ?? 1_000,
    );
    this.timer.unref();
  }

  private follow(): void {
    this.leading = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const m of Object.values(this.mirrors ?? {})) m.close();
    this.mirrors = null;
    this.states.clear();
    this.arrived.clear();
    this.opts.log.info('no longer the autoscaler');
  }

  private wake(instanceId: string): void {
    if (!this.leading || this.woken.has(instanceId)) return;
    const spec = this.opts.view.instanceById(instanceId);
    if (!spec || !autoscaled(spec) || spec.state !== 'running') return;
    this.woken.add(instanceId);
    void this.decide(spec, Date.now(), this.signals(instanceId)).catch((err) =>
      this.opts.log.warn({ err, instance: spec.name }, 'autoscaler wake-up failed'),
    );
  }

  private async tick(): Promise<void> {
    if (!this.leading) return;
    this.woken.clear();
    const now = Date.now();
    const seen = new Set<string>();
    const decisions: Promise<void>[] = [];
    const m = this.mirrors as Mirrors;
    const loads = byInstance(m.loads);
    const statuses = byInstance(m.statuses);
    const replicas = byInstance(m.replicas);
    for (const spec of this.opts.view.instances.values()) {
      if (!autoscaled(spec) || spec.state !== 'running') continue;
      seen.add(spec.id);
      const signals: Signals = {
        loads: loads.get(spec.id) ?? [],
        statuses: (statuses.get(spec.id) ?? []).map(([, v]) => v),
        replicas: (replicas.get(spec.id) ?? []).map(([, v]) => v),
      };
      decisions.push(this.decide(spec, now, signals));
    }
    for (const id of this.states.keys()) if (!seen.has(id)) this.states.delete(id);
    await Promise.all(decisions);
  }

  /** The signals of one instance (for a decision out of turn). */
  private signals(instanceId: string): Signals {
    const m = this.mirrors as Mirrors;
    return {
      loads: byInstance(m.loads, instanceId).get(instanceId) ?? [],
      statuses: (byInstance(m.statuses, instanceId).get(instanceId) ?? []).map(([, v]) => v),
      replicas: (byInstance(m.replicas, instanceId).get(instanceId) ?? []).map(([, v]) => v),
    };
  }

  /** Observed demand of an instance now: gateways' concurrency plus held requests, or what its replicas report if more. */
  private sample(signals: Signals, now: number): { concurrency: number; active: boolean } {
    const stale = this.opts.staleMs ?? 5_000;
    let gateways = 0;
    let active = false;
    for (const [key, r] of signals.loads) {
      if (now - (this.arrived.get(key) ?? 0) > stale) continue;
      gateways += r.concurrency + r.held;
      if (r.concurrency > 0 || r.held > 0 || r.rps > 0) active = true;
    }
    let replicas = 0;
    for (const st of signals.statuses) for (const f of st.replicas ?? []) replicas += (f.inFlight ?? 0) + (f.queued ?? 0);
    if (replicas > 0) active = true;
    return { concurrency: Math.max(gateways, replicas), active };
  }

  /** Replicas serving: healthy records on members of the instance's quorum. */
  private ready(spec: InstanceSpec, signals: Signals): number {
    const members = new Set(this.opts.view.quorumOf(spec.id)?.members ?? []);
    return signals.replicas.filter((r) => r.healthy && members.has(r.nodeId)).length;
  }

  private async decide(spec: InstanceSpec, now: number, signals: Signals): Promise<void> {
    const m = this.mirrors;
    if (!m) return;
    const settings = kpaSettings(spec);
    let state = this.states.get(spec.id);
    if (!state) this.states.set(spec.id, (state = new KpaState(now)));
    const sample = this.sample(signals, now);
    state.observe({ at: now, ...sample }, settings);
    const decision = state.decide(now, this.ready(spec, signals), settings);
    const current = m.scales.get(keys.scale(spec.id));
    if (current && current.desired === decision.desired && current.panic === decision.panic) return;
    const record: ScaleRecord = {
      instanceId: spec.id,
      desired: decision.desired,
      panic: decision.panic,
      stableConcurrency: Math.round(decision.stableConcurrency * 100) / 100,
      panicConcurrency: Math.round(decision.panicConcurrency * 100) / 100,
      reason: decision.reason.slice(0, 300),
      updatedAt: now,
    };
    const res = await this.opts.registry.txn({
      compare: [{ key: this.leaderKey, target: 'value', equals: this.opts.nodeId }],
      success: [{ type: 'put', key: keys.scale(spec.id), value: JSON.stringify(record) }],
    });
    if (!res.succeeded) {
      this.follow();
      this.election.request();
      return;
    }
    this.opts.log.info(
      { instance: spec.name, from: current?.desired ?? null, to: record.desired, panic: record.panic, reason: record.reason },
      'autoscaled',
    );
  }

  stop(): void {
    this.stopped = true;
    this.election.stop();
    this.watch?.close();
    if (this.leading) this.follow();
  }
}
