/**
 * Instance operations behind the RPC API. Every change is a compare-and-swap on the instance record, so
 * concurrent operations through different agents serialize in the registry instead of overwriting each
 * other. This module decides what is allowed; rpc.ts only maps HTTP onto it.
 */
import type { z } from 'zod';
import { AllegraError } from '../protocol/errors.js';
import { type Grant, instanceIdFor } from '../protocol/grants.js';
import { keys, PREFIX } from '../protocol/keys.js';
import type { Op, Registry } from '../protocol/registry.js';
import {
  type CreateInstanceRequest,
  certRecord,
  certStatusRecord,
  type exposeRequest,
  instanceSpec,
  instanceStatusRecord,
  parseRecord,
  replicaRecord,
  routeRecord,
} from '../protocol/schemas.js';
import { type DomainVerifier, domainToken } from './domains.js';

type ExposeRequest = z.infer<typeof exposeRequest>;

import {
  type ArtifactRef,
  type CertStatusRecord,
  type InstanceSpec,
  type InstanceStatus,
  type InstanceStatusRecord,
  newInstanceSpec,
  type QuorumRecord,
  type ReplicaRecord,
  type RouteRecord,
} from '../protocol/types.js';
import type { ClusterView } from '../registry/cluster-view.js';

function isExposeGrant(g: Grant): boolean {
  return g.envelope.path.split('?')[0]?.endsWith('/expose') === true;
}

/** Pushes a verified blob to a peer; resolves true once the peer holds it. */
export type BlobPusher = (nodeId: string, sha256: string) => Promise<boolean>;

export class InstanceService {
  constructor(
    private readonly registry: Registry,
    private readonly view: ClusterView,
    private readonly selfId: string,
  ) {}

  /** `grant` is the owner's signed create request: the instance id derives from it and routes carry it. */
  async create(owner: string, req: CreateInstanceRequest, grant: Grant): Promise<InstanceSpec> {
    const network = this.view.network();
    const now = Date.now();
    const quorumSize = network.quorumSize;
    // A volume has exactly one writer, so its instance runs exactly one replica (docs/ARCHITECTURE.md, "Volumes").
    if (req.volume && req.replicas && (req.replicas.min !== 1 || req.replicas.max !== 1))
      throw new AllegraError('bad_request', 'an instance with a volume runs one replica (its writer): leave --replicas out or use 1:1');
    const replicas = req.replicas ?? (req.volume ? { min: 1, max: 1 } : { min: quorumSize, max: quorumSize });
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
        ...(req.limits ? { limits: req.limits } : {}),
        ...(req.volume ? { volume: true } : {}),
      },
      now,
    );
    if (spec.driver !== 'process')
      throw new AllegraError('bad_request', `driver "${spec.driver}" is not available on this network yet; use --driver process`);
    const host = `${req.name}.${network.baseDomain}`;
    const route: RouteRecord = { host, instanceId: spec.id, instanceName: spec.name, kind: 'network', createdAt: now, grants: [grant] };
    // The instance and its network route are created together or not at all.
    const res = await this.registry.txn({
      compare: [
        { key: keys.instance(req.name), target: 'version', equals: 0 },
        { key: keys.route(host), target: 'version', equals: 0 },
      ],
      success: [
        { type: 'put', key: keys.instance(req.name), value: JSON.stringify(spec) },
        { type: 'put', key: keys.route(host), value: JSON.stringify(route) },
      ],
    });
    if (!res.succeeded) {
      const exists = await this.registry.get(keys.instance(req.name));
      throw new AllegraError('conflict', exists ? `instance "${req.name}" already exists` : `host ${host} is already routed`);
    }
    return spec;
  }

  /** Reads the committed spec (not the view, which may lag) and checks the caller may operate it. */
  async authorized(name: string, signer: string): Promise<{ spec: InstanceSpec; modRevision: number }> {
    const kv = await this.registry.get(keys.instance(name));
    const spec = parseRecord(instanceSpec, kv?.value);
    if (!kv || !spec) throw new AllegraError('not_found', `no instance named "${name}"`);
    if (spec.owner !== signer && !spec.authorized.includes(signer))
      throw new AllegraError('forbidden', `key ${signer.slice(0, 12)}… may not operate instance "${name}"`);
    return { spec, modRevision: kv.modRevision };
  }

  /** Like `authorized`, and refuses an immutable (revoked) instance: for callers about to change it. */
  async authorizedToChange(name: string, signer: string): Promise<{ spec: InstanceSpec; modRevision: number }> {
    const found = await this.authorized(name, signer);
    if (found.spec.immutable) throw new AllegraError('forbidden', `instance "${name}" is immutable (ownership revoked)`);
    return found;
  }

  /** Whether any instance's current artifact is this blob. */
  references(sha256: string): boolean {
    for (const spec of this.view.instances.values()) if (spec.artifact?.sha256 === sha256) return true;
    return false;
  }

  /** Applies `change` to the spec with compare-and-swap, retrying on concurrent updates. */
  private async update(
    name: string,
    signer: string,
    change: (spec: InstanceSpec) => InstanceSpec,
    opts: { allowImmutable?: boolean } = {},
  ): Promise<InstanceSpec> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const { spec, modRevision } = await this.authorized(name, signer);
      if (spec.immutable && !opts.allowImmutable)
        throw new AllegraError('forbidden', `instance "${name}" is immutable (ownership revoked)`);
      const next = { ...change(spec), version: spec.version + 1, updatedAt: Date.now() };
      const res = await this.registry.txn({
        compare: [{ key: keys.instance(name), target: 'modRevision', equals: modRevision }],
        success: [{ type: 'put', key: keys.instance(name), value: JSON.stringify(next) }],
      });
      if (res.succeeded) return next;
    }
    throw new AllegraError('conflict', `instance "${name}" is being changed concurrently; try again`);
  }

  setState(name: string, signer: string, state: 'running' | 'stopped'): Promise<InstanceSpec> {
    return this.update(name, signer, (spec) => ({ ...spec, state }));
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
  ): Promise<{ spec: InstanceSpec; quorum: QuorumRecord }> {
    const { spec } = await this.authorized(name, signer);
    if (spec.immutable) throw new AllegraError('forbidden', `instance "${name}" is immutable (ownership revoked)`);
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
    const artifact: ArtifactRef = { sha256: blob.sha256, size: blob.size, holders };
    const next = await this.update(name, signer, (s) => ({ ...s, artifact, cmd: cmd ?? s.cmd }));
    return { spec: next, quorum };
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
    const { spec } = await this.authorized(name, signer);
    if (spec.immutable) throw new AllegraError('forbidden', `instance "${name}" is immutable (ownership revoked)`);
    if (spec.port !== 0 && spec.port !== req.port)
      throw new AllegraError('bad_request', `instance "${name}" listens on port ${spec.port}, not ${req.port}`);
    const network = this.view.network();
    const own = `${name}.${network.baseDomain}`;
    const host = req.domain ?? own;
    if (req.domain && req.domain !== own) {
      if (req.domain === network.baseDomain || req.domain.endsWith(`.${network.baseDomain}`)) {
        throw new AllegraError(
          'forbidden',
          `${req.domain} is under the network's base domain ${network.baseDomain}; instance "${name}" can only have ${own}`,
        );
      }
      const token = domainToken(spec.owner, req.domain);
      if (!(await verifier.verify(req.domain, token))) {
        throw new AllegraError(
          'forbidden',
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
        port: req.port,
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
        if (!spec.domains.includes(host)) await this.update(name, signer, (s) => ({ ...s, domains: [...new Set([...s.domains, host])] }));
        const port = network.httpsPort && network.httpsPort !== 443 ? `:${network.httpsPort}` : '';
        return { host, url: `https://${host}${port}/`, route };
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

  async delete(name: string, signer: string): Promise<void> {
    const { spec, modRevision } = await this.authorized(name, signer);
    if (spec.immutable) throw new AllegraError('forbidden', `instance "${name}" is immutable (ownership revoked)`);
    const routes = await this.routesOf(spec.id);
    const ops: Op[] = [
      { type: 'delete', key: keys.instance(name) },
      ...routes.map((host) => ({ type: 'delete', key: keys.route(host) }) as Op),
      { type: 'deletePrefix', prefix: keys.replicasOf(spec.id) },
      { type: 'deletePrefix', prefix: keys.instanceStatusOf(spec.id) },
      // The instance's app state and its volume's records go with it (members then drop the chunks).
      { type: 'deletePrefix', prefix: `${PREFIX.state}${spec.id}/` },
      { type: 'deletePrefix', prefix: keys.volumeOf(spec.id) },
    ];
    const res = await this.registry.txn({
      compare: [{ key: keys.instance(name), target: 'modRevision', equals: modRevision }],
      success: ops,
    });
    if (!res.succeeded) throw new AllegraError('conflict', `instance "${name}" changed while deleting; try again`);
  }

  async list(signer: string): Promise<InstanceSpec[]> {
    const { items } = await this.registry.list(PREFIX.instances);
    return items
      .map((kv) => parseRecord(instanceSpec, kv.value))
      .filter((s): s is InstanceSpec => s !== undefined && (s.owner === signer || s.authorized.includes(signer)));
  }

  async status(name: string, signer: string): Promise<InstanceStatus> {
    const { spec } = await this.authorized(name, signer);
    const { items } = await this.registry.list(keys.replicasOf(spec.id));
    const replicas = items.map((kv) => parseRecord(replicaRecord, kv.value)).filter((r): r is ReplicaRecord => r !== undefined);
    const statuses = await this.registry.list(keys.instanceStatusOf(spec.id));
    const members = statuses.items
      .map((kv) => parseRecord(instanceStatusRecord, kv.value))
      .filter((r): r is InstanceStatusRecord => r !== undefined);
    return { instance: spec, quorum: this.view.quorumOf(spec.id) ?? null, replicas, routes: await this.routesOf(spec.id), members };
  }

  private async routesOf(instanceId: string): Promise<string[]> {
    const { items } = await this.registry.list(PREFIX.routes);
    return items.map((kv) => parseRecord(routeRecord, kv.value)).flatMap((r) => (r && r.instanceId === instanceId ? [r.host] : []));
  }
}
