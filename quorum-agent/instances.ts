/**
 * Instance operations behind the RPC API. Every change is a compare-and-swap on the instance record, so
 * concurrent operations through different agents serialize in the registry instead of overwriting each
 * other. This module decides what is allowed; rpc.ts only maps HTTP onto it.
 */
import type { z } from 'zod';
import { AllegraError } from '../protocol/errors.js';
import { type Grant, instanceIdFor } from '../protocol/grants.js';
import type { HistoryEntry } from '../protocol/history.js';
import { keys, PREFIX } from '../protocol/keys.js';
import type { Compare, Op, Registry } from '../protocol/registry.js';
import {
  AUTOSCALE,
  type authRequest,
  type CreateInstanceRequest,
  certRecord,
  certStatusRecord,
  type exposeRequest,
  instanceSpec,
  instanceStatusRecord,
  parseRecord,
  replicaRecord,
  type revokeRequest,
  routeRecord,
  scaleRecord,
  type scaleRequest,
} from '../protocol/schemas.js';
import type { SignedEnvelope } from '../protocol/signing.js';
import { type DomainVerifier, domainToken } from './domains.js';
import { DEFAULT_APP_PORT } from './drivers/process.js';
import type { HistoryWriter } from './history.js';

type ExposeRequest = z.infer<typeof exposeRequest>;
type ScaleRequest = z.infer<typeof scaleRequest>;
type AuthRequest = z.infer<typeof authRequest>;
type RevokeRequest = z.infer<typeof revokeRequest>;

import {
  type ArtifactRef,
  type AutoscaleSettings,
  type CertStatusRecord,
  type InstanceSpec,
  type InstanceStatus,
  type InstanceStatusRecord,
  KEEP_PREVIOUS,
  newInstanceSpec,
  type PreviousVersion,
  type QuorumRecord,
  type ReplicaRecord,
  type RouteRecord,
} from '../protocol/types.js';
import type { ClusterView } from '../registry/cluster-view.js';
import { offersDriver } from '../router/scale.js';

function isExposeGrant(g: Grant): boolean {
  return g.envelope.path.split('?')[0]?.endsWith('/expose') === true;
}

/** The one line every refused change of a revoked instance gets. */
export function revokedMessage(spec: InstanceSpec): string {
  const when = spec.revokedAt ? ` at ${new Date(spec.revokedAt).toISOString()}` : '';
  const how = spec.governance
    ? `a change needs ${spec.governance.threshold} of its ${spec.governance.keys.length} governance keys (allegra propose)`
    : 'it can never change again';
  return `instance "${spec.name}" is immutable: its owner revoked ownership${when}; ${how}`;
}

/** The port an instance's app listens on inside its replica: its --port, else the network's PORT (3000). */
export function listenPortOf(spec: InstanceSpec): number {
  return spec.port || DEFAULT_APP_PORT;
}

/** A change of an instance: what it becomes, and its history record. */
export interface Change {
  next: (spec: InstanceSpec) => InstanceSpec;
  entry: (spec: InstanceSpec, next: InstanceSpec) => HistoryEntry;
  /** Further registry operations committed with it (a proposal removed…), and what they need to hold. */
  ops?: Op[];
  compare?: Compare[];
}

export interface Replicas {
  healthy: number;
  total: number;
  want: number;
}

/** Pushes a verified blob to a peer; resolves true once the peer holds it. */
export type BlobPusher = (nodeId: string, sha256: string) => Promise<boolean>;

export class InstanceService {
  constructor(
    private readonly registry: Registry,
    private readonly view: ClusterView,
    private readonly selfId: string,
    readonly history: HistoryWriter,
  ) {}

  /** `grant` is the owner's signed create request: the instance id derives from it and routes carry it. */
  async create(owner: string, req: CreateInstanceRequest, grant: Grant): Promise<InstanceSpec> {
    const network = this.view.network();
    const now = Date.now();
    const quorumSize = network.quorumSize;
    // A vm instance is one VPS whose disk is the instance's volume (docs/VM.md): replicated to every member,
    // restarted elsewhere from the newest copy when its machine is lost.
    const volume = req.volume === true || req.driver === 'vm';
    // A volume has exactly one writer, so its instance runs exactly one replica (docs/ARCHITECTURE.md, "Volumes").
    if (volume && req.replicas && (req.replicas.min !== 1 || req.replicas.max !== 1))
      throw new AllegraError(
        'bad_request',
        req.driver === 'vm'
          ? 'a vm instance is one VM whose disk is its volume (one writer): leave --replicas out or use 1:1'
          : 'an instance with a volume runs one replica (its writer): leave --replicas out or use 1:1',
      );
    // The wasm host has no file system to bind the volume at /volume and no process to freeze for a snapshot.
    if (volume && req.driver !== 'process' && req.driver !== 'vm')
      throw new AllegraError(
        'bad_request',
        `a volume needs the process or vm driver (the ${req.driver} driver has no file system to bind it): leave --volume or --driver out`,
      );
    const replicas = req.replicas ?? (volume ? { min: 1, max: 1 } : { min: quorumSize, max: quorumSize });
    const spec = newInstanceSpec(
      {
        id: instanceIdFor(grant),
        name: req.name,
        owner,
        driver: req.driver,
        cmd: req.cmd,
        port: req.port,
        env: req.env,
        replicas,
        createGrant: grant,
        // Versions count deploys: nothing is deployed yet.
        version: 0,
        ...(req.limits ? { limits: req.limits } : {}),
        ...(volume ? { volume: true } : {}),
      },
      now,
    );
    // Placement sends replicas only to members that offer the driver: refuse what no node offers at all.
    const offering = [...this.view.nodes.values()].filter((n) => offersDriver(n, spec.driver));
    if (offering.length === 0)
      throw new AllegraError(
        'bad_request',
        `no node of this network offers the ${spec.driver} driver (nodes offer: ${[...new Set([...this.view.nodes.values()].flatMap((n) => n.drivers ?? ['process']))].sort().join(', ') || 'none'})`,
      );
    const host = `${req.name}.${network.baseDomain}`;
    const route: RouteRecord = { host, instanceId: spec.id, instanceName: spec.name, kind: 'network', createdAt: now, grants: [grant] };
    // The instance, its network route and the first record of its history are created together or not at all.
    const first = this.history.append(
      spec.id,
      { head: null, modRevision: 0 },
      { op: 'create', author: owner, request: grant, detail: { name: req.name } },
      now,
    );
    const res = await this.registry.txn({
      compare: [
        { key: keys.instance(req.name), target: 'version', equals: 0 },
        { key: keys.route(host), target: 'version', equals: 0 },
        first.compare,
      ],
      success: [
        { type: 'put', key: keys.instance(req.name), value: JSON.stringify(spec) },
        { type: 'put', key: keys.route(host), value: JSON.stringify(route) },
        ...first.ops,
      ],
    });
    if (!res.succeeded) {
      const exists = await this.registry.get(keys.instance(req.name));
      throw new AllegraError('conflict', exists ? `instance "${req.name}" already exists` : `host ${host} is already routed`);
    }
    return spec;
  }

  /** The committed spec (not the view, which may lag). */
  async read(name: string): Promise<{ spec: InstanceSpec; modRevision: number }> {
    const kv = await this.registry.get(keys.instance(name));
    const spec = parseRecord(instanceSpec, kv?.value);
    if (!kv || !spec) throw new AllegraError('not_found', `no instance named "${name}"`);
    return { spec, modRevision: kv.modRevision };
  }

  /**
   * Reads the committed spec and checks the caller may look at it: the owner and team keys, and the
   * governance keys of a revoked instance. Read fresh on every call, so a removed team key is refused at once.
   */
  async authorized(name: string, signer: string): Promise<{ spec: InstanceSpec; modRevision: number }> {
    const found = await this.read(name);
    const { spec } = found;
    if (spec.owner !== signer && !spec.authorized.includes(signer) && !spec.governance?.keys.includes(signer))
      throw new AllegraError('forbidden', `key ${signer.slice(0, 12)}… may not operate instance "${name}"`);
    return found;
  }

  /** Like `authorized` for the owner and team keys, and refuses any change of a revoked instance. */
  async authorizedToChange(name: string, signer: string): Promise<{ spec: InstanceSpec; modRevision: number }> {
    const found = await this.authorized(name, signer);
    mayChange(found.spec, signer);
    return found;
  }

  /** Whether any instance's current artifact is this blob. */
  references(sha256: string): boolean {
    for (const spec of this.view.instances.values()) {
      if (spec.artifact?.sha256 === sha256) return true;
      // Earlier versions stay on the members so that a rollback needs no upload.
      if (spec.previous?.some((p) => p.artifact.sha256 === sha256)) return true;
    }
    return false;
  }

  /**
   * Commits a change with compare-and-swap on the spec and the history head, its record in the same
   * transaction; retries on concurrent updates. `allow` checks the caller against the spec it read.
   */
  async commit(name: string, allow: (spec: InstanceSpec) => void, change: Change): Promise<InstanceSpec> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const { spec, modRevision } = await this.read(name);
      allow(spec);
      const next = { ...change.next(spec), updatedAt: Date.now() };
      const tip = await this.history.tip(spec.id);
      const appended = this.history.append(spec.id, tip, change.entry(spec, next));
      const res = await this.registry.txn({
        compare: [{ key: keys.instance(name), target: 'modRevision', equals: modRevision }, appended.compare, ...(change.compare ?? [])],
        success: [{ type: 'put', key: keys.instance(name), value: JSON.stringify(next) }, ...appended.ops, ...(change.ops ?? [])],
      });
      if (res.succeeded) return next;
    }
    throw new AllegraError('conflict', `instance "${name}" is being changed concurrently; try again`);
  }

  /** A change by the owner or a team key of an instance that was not revoked. */
  private update(name: string, signer: string, change: Change): Promise<InstanceSpec> {
    return this.commit(name, (spec) => mayChange(spec, signer), change);
  }

  /** Starts or stops; `changed` is false (and nothing is recorded) when it already was in that state. */
  async setState(
    name: string,
    signer: string,
    state: 'running' | 'stopped',
    request: Grant,
  ): Promise<{ spec: InstanceSpec; changed: boolean }> {
    const { spec } = await this.authorizedToChange(name, signer);
    if (spec.state === state) return { spec, changed: false };
    const next = await this.update(name, signer, {
      next: (s) => ({ ...s, state }),
      entry: () => ({ op: state === 'running' ? 'start' : 'stop', author: signer, request, detail: {} }),
    });
    return { spec: next, changed: true };
  }

  /** Adds or removes a team key (the owner only); `changed` is false when there was nothing to do. */
  async auth(name: string, signer: string, req: AuthRequest, request: Grant): Promise<{ spec: InstanceSpec; changed: boolean }> {
    const { spec } = await this.read(name);
    mayManageKeys(spec, signer);
    const key = (req.add ?? req.remove) as string;
    if (req.add !== undefined && (key === spec.owner || spec.authorized.includes(key))) return { spec, changed: false };
    if (req.remove !== undefined && !spec.authorized.includes(key))
      throw new AllegraError('not_found', `${key.slice(0, 12)}… is not a team key of instance "${name}"`);
    const next = await this.commit(name, (s) => mayManageKeys(s, signer), {
      next: (s) => ({
        ...s,
        authorized: req.add !== undefined ? [...new Set([...s.authorized, key])] : s.authorized.filter((k) => k !== key),
      }),
      entry: () => ({ op: req.add !== undefined ? 'auth.add' : 'auth.remove', author: signer, request, detail: { key } }),
    });
    return { spec: next, changed: true };
  }

  /**
   * The owner gives up ownership: the instance becomes immutable and keeps being served. With a governance
   * policy, M of its keys may still change it together (governance.ts); without, nothing ever changes again.
   */
  revoke(name: string, signer: string, req: RevokeRequest, request: Grant): Promise<InstanceSpec> {
    return this.commit(name, (s) => mayManageKeys(s, signer), {
      next: (s) => ({ ...s, immutable: true, revokedAt: Date.now(), ...(req.governance ? { governance: req.governance } : {}) }),
      entry: () => ({ op: 'revoke', author: signer, request, detail: { governance: req.governance ?? null } }),
    });
  }

  /**
   * `allegra scale`: the replica bounds, and the autoscaler's target and idle time (kept from before, else
   * the network defaults, when not given). With min below max the elected autoscaler decides the count.
   */
  scale(name: string, signer: string, req: ScaleRequest, request: Grant): Promise<InstanceSpec> {
    return this.update(name, signer, {
      next: (spec) => {
        // Its one writer holds the volume: more replicas could not share it, none would leave it unwritten.
        if (spec.volume)
          throw new AllegraError('bad_request', `${spec.name} has a volume: it runs exactly one replica (its writer) and is not scaled`);
        const autoscale: AutoscaleSettings = {
          target: req.target ?? spec.autoscale?.target ?? AUTOSCALE.target.default,
          idleSeconds: req.idleSeconds ?? spec.autoscale?.idleSeconds ?? AUTOSCALE.idleSeconds.default,
        };
        const windowSeconds = req.windowSeconds ?? spec.autoscale?.windowSeconds;
        if (windowSeconds !== undefined) autoscale.windowSeconds = windowSeconds;
        return { ...spec, replicas: { min: req.min, max: req.max }, autoscale };
      },
      entry: (_s, n) => ({ op: 'scale', author: signer, request, detail: { replicas: n.replicas, autoscale: n.autoscale } }),
    });
  }

  /**
   * Commits a new artifact once a majority of the owning quorum holds it. `pushTo` replicates the blob
   * to one member; this node counts as a holder as it received the upload.
   */
  async deploy(
    name: string,
    signer: string,
    blob: { sha256: string; size: number },
    cmd: string | undefined,
    pushTo: BlobPusher,
    envelope: SignedEnvelope,
  ): Promise<{ spec: InstanceSpec; quorum: QuorumRecord }> {
    const { spec } = await this.authorizedToChange(name, signer);
    const { artifact, quorum } = await this.replicateArtifact(spec, blob, pushTo);
    const next = await this.update(name, signer, {
      next: (s) => ({ ...s, artifact, cmd: cmd ?? s.cmd, version: s.version + 1, previous: keepPrevious(s) }),
      entry: (_s, n) => ({
        op: 'deploy',
        author: signer,
        request: { envelope },
        detail: { artifact: blob.sha256, size: blob.size, version: n.version, cmd: n.cmd },
      }),
    });
    return { spec: next, quorum };
  }

  /**
   * Puts an earlier version's code back as a new version (versions only grow). Its blob is still on the
   * members that held it then (kept referenced by `previous`); members without it pull it from them.
   */
  async rollback(name: string, signer: string, to: number, request: Grant): Promise<InstanceSpec> {
    const { spec } = await this.authorizedToChange(name, signer);
    if (!spec.previous?.some((p) => p.version === to))
      throw new AllegraError(
        'bad_request',
        `version ${to} of ${name} is not kept (the last ${KEEP_PREVIOUS} earlier versions are): deploy its code again`,
      );
    return this.update(name, signer, {
      next: (s) => {
        const back = s.previous?.find((p) => p.version === to);
        if (!back) throw new AllegraError('conflict', `version ${to} of ${name} is no longer kept`);
        return { ...s, artifact: back.artifact, cmd: back.cmd, version: s.version + 1, previous: keepPrevious(s) };
      },
      entry: (_s, n) => ({
        op: 'rollback',
        author: signer,
        request,
        detail: { artifact: n.artifact?.sha256 ?? null, size: n.artifact?.size ?? 0, version: n.version, cmd: n.cmd, to },
      }),
    });
  }

  /** Pushes a received blob to the instance's quorum; resolves once a majority holds it. */
  async replicateArtifact(
    spec: InstanceSpec,
    blob: { sha256: string; size: number },
    pushTo: BlobPusher,
  ): Promise<{ artifact: ArtifactRef; quorum: QuorumRecord }> {
    const quorum = this.view.quorumOf(spec.id);
    if (!quorum || quorum.members.length === 0)
      throw new AllegraError('unavailable', 'no quorum is available to hold the instance yet; try again shortly');
    const needed = Math.floor(quorum.members.length / 2) + 1;
    const holders = await this.replicate(quorum.members, blob.sha256, needed, pushTo);
    if (holders.filter((h) => quorum.members.includes(h)).length < needed) {
      throw new AllegraError(
        'unavailable',
        `only ${holders.length} of ${quorum.members.length} quorum members stored the artifact; a majority (${needed}) is required`,
      );
    }
    return { artifact: { sha256: blob.sha256, size: blob.size, holders }, quorum };
  }

  /** Resolves with the holders as soon as `needed` members hold the blob (or every push has finished). */
  private replicate(members: string[], sha256: string, needed: number, pushTo: BlobPusher): Promise<string[]> {
    const holders = [this.selfId];
    const others = members.filter((m) => m !== this.selfId);
    const inQuorum = () => holders.filter((h) => members.includes(h)).length;
    return new Promise((resolve) => {
      let pending = others.length;
      if (inQuorum() >= needed || pending === 0) resolve([...holders]);
      for (const m of others) {
        void pushTo(m, sha256)
          .catch(() => false)
          .then((ok) => {
            if (ok) holders.push(m);
            pending--;
            if (inQuorum() >= needed || pending === 0) resolve([...holders]);
          });
      }
    });
  }

  /**
   * Exposes an instance over HTTPS: marks its network route (or a new custom-domain route) for TLS, so the
   * gateways order its certificate. The network's base-domain names belong to the network: an instance
   * gets only its own; a custom domain needs proof of control first.
   */
  async expose(
    name: string,
    signer: string,
    req: ExposeRequest,
    verifier: DomainVerifier,
    grant: Grant,
  ): Promise<{ host: string; url: string; route: RouteRecord }> {
    const { spec } = await this.authorizedToChange(name, signer);
    const port = listenPortOf(spec);
    if (req.port !== undefined && req.port !== port)
      throw new AllegraError(
        'bad_request',
        `instance "${name}" listens on port ${port}${spec.port ? ' (its --port)' : ' ($PORT)'}, not ${req.port}: expose it with --port ${port}, or without --port`,
      );
    const network = this.view.network();
    const own = `${name}.${network.baseDomain}`;
    const host = req.domain ?? own;
    if (req.domain && req.domain !== own) {
      if (req.domain === network.baseDomain || req.domain.endsWith(`.${network.baseDomain}`)) {
        throw new AllegraError(
          'refused',
          `${req.domain} is under the network's base domain ${network.baseDomain}; instance "${name}" can only have ${own}`,
        );
      }
      const token = domainToken(spec.owner, req.domain);
      if (!(await verifier.verify(req.domain, token))) {
        throw new AllegraError(
          'refused',
          `prove control of ${req.domain} first: add a DNS TXT record _allegra-challenge.${req.domain} = "${token}", or serve "${token}" at http://${req.domain}/.well-known/allegra-domain-verification, then run expose again`,
        );
      }
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      const existing = await this.registry.get(keys.route(host));
      const current = parseRecord(routeRecord, existing?.value);
      if (current && current.instanceId !== spec.id) throw new AllegraError('conflict', `${host} is already routed to another instance`);
      const route: RouteRecord = {
        ...(current ?? {
          host,
          instanceId: spec.id,
          instanceName: spec.name,
          kind: req.domain && req.domain !== own ? 'custom' : 'network',
          createdAt: Date.now(),
        }),
        tls: { redirectHttp: req.redirectHttp },
        port,
        // The owner's request is what lets gateways serve this host: keep the create grant of the network
        // name, replace an earlier expose of the same host.
        grants: [...(current?.grants ?? []).filter((g) => !isExposeGrant(g)), grant],
      };
      const res = await this.registry.txn({
        compare: [
          existing
            ? { key: keys.route(host), target: 'modRevision', equals: existing.modRevision }
            : { key: keys.route(host), target: 'version', equals: 0 },
        ],
        success: [{ type: 'put', key: keys.route(host), value: JSON.stringify(route) }],
      });
      if (res.succeeded) {
        await this.update(name, signer, {
          next: (s) => ({ ...s, domains: [...new Set([...s.domains, host])] }),
          entry: () => ({ op: 'expose', author: signer, request: grant, detail: { host, port } }),
        });
        return { host, url: urlOf(host, true, network), route };
      }
    }
    throw new AllegraError('conflict', `route ${host} is being changed concurrently; try again`);
  }

  /** Certificate state of every exposed host of an instance, for `allegra expose` progress. */
  async certificates(
    name: string,
    signer: string,
  ): Promise<Array<{ host: string; status: CertStatusRecord | null; notAfter: number | null; issuer: string | null }>> {
    const { spec } = await this.authorized(name, signer);
    const hosts = await this.routesOf(spec.id);
    return Promise.all(
      hosts.map(async (host) => {
        const cert = parseRecord(certRecord, (await this.registry.get(keys.cert(host)))?.value);
        const status = parseRecord(certStatusRecord, (await this.registry.get(keys.certStatus(host)))?.value) ?? null;
        return { host, status, notAfter: cert?.notAfter ?? null, issuer: cert?.issuer ?? null };
      }),
    );
  }

  /** Deletes an instance with its routes and history; `governed` is set by an applied governance proposal. */
  async delete(name: string, signer: string, governed = false): Promise<void> {
    const { spec, modRevision } = governed ? await this.read(name) : await this.authorizedToChange(name, signer);
    const routes = await this.routesOf(spec.id);
    const ops: Op[] = [
      { type: 'delete', key: keys.instance(name) },
      ...routes.map((host) => ({ type: 'delete', key: keys.route(host) }) as Op),
      { type: 'deletePrefix', prefix: keys.replicasOf(spec.id) },
      { type: 'deletePrefix', prefix: keys.instanceStatusOf(spec.id) },
      { type: 'delete', key: keys.scale(spec.id) },
      // The instance's app state and its volume's records go with it (members then drop the chunks).
      { type: 'deletePrefix', prefix: `${PREFIX.state}${spec.id}/` },
      { type: 'deletePrefix', prefix: keys.volumeOf(spec.id) },
      // The history is kept with the instance and goes with it (usage records stay: they are what was served).
      { type: 'deletePrefix', prefix: keys.historyOf(spec.id) },
      { type: 'deletePrefix', prefix: keys.proposalsOf(spec.id) },
    ];
    const res = await this.registry.txn({
      compare: [{ key: keys.instance(name), target: 'modRevision', equals: modRevision }],
      success: ops,
    });
    if (!res.succeeded) throw new AllegraError('conflict', `instance "${name}" changed while deleting; try again`);
  }

  /** The caller's instances, each with how many of its replicas run and are healthy. */
  async list(signer: string): Promise<Array<InstanceSpec & { running: Replicas }>> {
    const [{ items }, replicas] = await Promise.all([this.registry.list(PREFIX.instances), this.registry.list(PREFIX.replicas)]);
    const counts = new Map<string, { healthy: number; total: number }>();
    for (const kv of replicas.items) {
      const r = parseRecord(replicaRecord, kv.value);
      if (!r || r.endpoint === '') continue;
      const c = counts.get(r.instanceId) ?? { healthy: 0, total: 0 };
      c.total++;
      if (r.healthy) c.healthy++;
      counts.set(r.instanceId, c);
    }
    return items
      .map((kv) => parseRecord(instanceSpec, kv.value))
      .filter(
        (s): s is InstanceSpec =>
          s !== undefined && (s.owner === signer || s.authorized.includes(signer) || s.governance?.keys.includes(signer) === true),
      )
      .map((s) => ({
        ...s,
        running: { ...(counts.get(s.id) ?? { healthy: 0, total: 0 }), want: s.state === 'running' ? s.replicas.min : 0 },
      }));
  }

  async status(name: string, signer: string): Promise<InstanceStatus> {
    const { spec } = await this.authorized(name, signer);
    return this.describe(spec);
  }

  /** Where and how an instance runs, with its URLs. */
  async describe(spec: InstanceSpec): Promise<InstanceStatus> {
    const { items } = await this.registry.list(keys.replicasOf(spec.id));
    const replicas = items.map((kv) => parseRecord(replicaRecord, kv.value)).filter((r): r is ReplicaRecord => r !== undefined);
    const statuses = await this.registry.list(keys.instanceStatusOf(spec.id));
    const members = statuses.items
      .map((kv) => parseRecord(instanceStatusRecord, kv.value))
      .filter((r): r is InstanceStatusRecord => r !== undefined);
    const routes = await this.routeRecordsOf(spec.id);
    const network = this.view.network();
    return {
      instance: spec,
      quorum: this.view.quorumOf(spec.id) ?? null,
      replicas,
      routes: routes.map((r) => r.host),
      members,
      urls: routes.map((r) => urlOf(r.host, r.tls !== undefined, network)),
      scale: parseRecord(scaleRecord, (await this.registry.get(keys.scale(spec.id)))?.value) ?? null,
    };
  }

  private async routesOf(instanceId: string): Promise<string[]> {
    return (await this.routeRecordsOf(instanceId)).map((r) => r.host);
  }

  private async routeRecordsOf(instanceId: string): Promise<RouteRecord[]> {
    const { items } = await this.registry.list(PREFIX.routes);
    return items.map((kv) => parseRecord(routeRecord, kv.value)).flatMap((r) => (r && r.instanceId === instanceId ? [r] : []));
  }
}

/** A route's public URL, with the gateways' port when it is not the scheme's default. */
export function urlOf(host: string, tls: boolean, network: { httpPort?: number; httpsPort?: number }): string {
  const port = tls ? network.httpsPort : network.httpPort;
  const suffix = port && port !== (tls ? 443 : 80) ? `:${port}` : '';
  return `${tls ? 'https' : 'http'}://${host}${suffix}/`;
}

/** The owner or a team key; governance keys may only read. */
function mayOperate(spec: InstanceSpec, signer: string): void {
  if (spec.owner !== signer && !spec.authorized.includes(signer))
    throw new AllegraError('forbidden', `key ${signer.slice(0, 12)}… may not operate instance "${spec.name}"`);
}

function mayChange(spec: InstanceSpec, signer: string): void {
  mayOperate(spec, signer);
  if (spec.immutable) throw new AllegraError('refused', revokedMessage(spec));
}

/** Team keys and ownership are the owner's alone. */
function mayManageKeys(spec: InstanceSpec, signer: string): void {
  if (spec.owner !== signer) {
    mayOperate(spec, signer);
    throw new AllegraError('forbidden', `only the owner of instance "${spec.name}" may change its keys or ownership`);
  }
  if (spec.immutable) throw new AllegraError('refused', revokedMessage(spec));
}

/** The versions kept for a rollback after `spec`'s current one is replaced: the newest, one per artifact and command. */
function keepPrevious(spec: InstanceSpec): PreviousVersion[] {
  const kept = (spec.previous ?? []).filter((p) => p.artifact.sha256 !== spec.artifact?.sha256 || p.cmd !== spec.cmd);
  if (spec.artifact) kept.push({ version: spec.version, artifact: spec.artifact, cmd: spec.cmd });
  return kept.slice(-KEEP_PREVIOUS);
}
