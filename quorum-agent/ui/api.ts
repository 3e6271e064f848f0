/**
 * The UI's own API beside the RPC API, signed and checked the same way (the browser signs with its session
 * key and carries its delegation; see protocol/delegation.ts). Everything else the UI shows or does goes
 * through the RPC routes the CLI uses, so actions have the CLI's checks and errors.
 *
 * - `GET /v1/ui/watch`: server-sent events, one `change` notice (instance names, network flag) per registry
 *   change the caller may see, coalesced over 25 ms; the stream ends when the delegation expires (at most
 *   after 10 minutes: the browser signs a new request and reconnects).
 * - `GET /v1/ui/network`: nodes, regions, quorums, gateways, certificates (any signed caller: all of it is
 *   what a permissionless network publishes anyway; instance names are not listed).
 * - `GET /v1/ui/instances/:name/metrics` and `…/events`: the caller's own instances only.
 */
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { DELEGATION_HEADER, decodeDelegation } from '../../protocol/delegation.js';
import { AllegraError } from '../../protocol/errors.js';
import type { Registry } from '../../protocol/registry.js';
import type { InstanceSpec } from '../../protocol/types.js';
import type { ClusterView } from '../../registry/cluster-view.js';
import type { InstanceService } from '../instances.js';
import type { SignedRequests } from '../rpc.js';
import { assetRoutes } from './assets.js';
import { UiFeed } from './feed.js';
import { MetricsSampler } from './metrics-sampler.js';

export interface UiDeps {
  nodeId: string;
  registry: Registry;
  view: ClusterView;
  service: InstanceService;
  machine?: string;
  /** For tests: where the built assets are. */
  assetsDir?: URL;
}

const MAX_STREAM_MS = 10 * 60_000;
const HEARTBEAT_MS = 15_000;
/** Open watch streams: per key and in all (each holds a socket and a listener). */
const MAX_STREAMS_PER_KEY = 8;
const MAX_STREAMS = 512;

const mayRead = (spec: InstanceSpec, key: string) =>
  spec.owner === key || spec.authorized.includes(key) || spec.governance?.keys.includes(key) === true;

export interface UiService {
  routes: (app: Hono, requests: SignedRequests) => void;
  close(): void;
}

export function uiService(deps: UiDeps): UiService {
  const feed = new UiFeed(deps.registry, deps.view);
  const sampler = new MetricsSampler({
    gateways: () => deps.view.gateways.values(),
    machine: deps.machine,
    onCounters: (d) => feed.gatewayCounters(d.ejections, d.failovers),
    onColdStarts: (route, n) => feed.coldStarts(route, n),
  });
  const streams = new Map<string, number>();
  let open = 0;

  const routes = (app: Hono, { signedNoBody }: SignedRequests) => {
    assetRoutes(app, deps.assetsDir);

    app.get('/v1/ui/watch', async (c) => {
      const { signer, envelope } = await signedNoBody(c);
      const mine = streams.get(signer) ?? 0;
      if (mine >= MAX_STREAMS_PER_KEY || open >= MAX_STREAMS)
        throw new AllegraError('unavailable', 'too many open dashboards for this key: close one');
      await feed.start();
      sampler.touch();
      const header = envelope.headers[DELEGATION_HEADER];
      const expires = header
        ? (decodeDelegation(header) as { ok: true; delegation: { expiresAt: number } }).delegation.expiresAt
        : Infinity;
      const until = Math.min(expires, Date.now() + MAX_STREAM_MS);
      const seen = new Set([...deps.view.instances.values()].filter((s) => mayRead(s, signer)).map((s) => s.name));
      streams.set(signer, mine + 1);
      open++;
      return streamSSE(c, async (stream) => {
        let finish: () => void = () => {};
        const done = new Promise<void>((r) => {
          finish = r;
        });
        const unsubscribe = feed.subscribe((change) => {
          const names = [...change.instances].filter((name) => {
            const spec = deps.view.instance(name);
            if (spec && mayRead(spec, signer)) seen.add(name);
            else if (!seen.delete(name)) return false;
            return true;
          });
          if (names.length === 0 && !change.network) return;
          void stream.writeSSE({ event: 'change', data: JSON.stringify({ instances: names, network: change.network }) }).catch(finish);
        });
        const heartbeat = setInterval(() => {
          sampler.touch();
          void stream.writeSSE({ event: 'ping', data: String(Date.now()) }).catch(finish);
        }, HEARTBEAT_MS);
        const end = setTimeout(finish, Math.max(0, until - Date.now()));
        stream.onAbort(finish);
        try {
          await stream.writeSSE({ event: 'hello', data: JSON.stringify({ node: deps.nodeId, until }) });
          await done;
        } finally {
          unsubscribe();
          clearInterval(heartbeat);
          clearTimeout(end);
          open--;
          const left = (streams.get(signer) ?? 1) - 1;
          if (left > 0) streams.set(signer, left);
          else streams.delete(signer);
        }
      });
    });

    app.get('/v1/ui/network', async (c) => {
      await signedNoBody(c);
      await feed.start();
      sampler.touch();
      const { view } = deps;
      const nodes = [...view.nodes.values()].map((n) => ({
        id: n.id,
        region: n.region,
        capacity: n.capacity,
        load: n.load,
        rpc: n.rpc,
        startedAt: n.startedAt,
        machine: n.machine ?? null,
      }));
      const perQuorum = new Map<string, number>();
      for (const s of view.instances.values()) {
        const q = view.quorumOf(s.id);
        if (q) perQuorum.set(q.id, (perQuorum.get(q.id) ?? 0) + 1);
      }
      const regions = new Map<string, { region: string; nodes: number; capacity: number; load: number }>();
      for (const n of nodes) {
        const r = regions.get(n.region) ?? { region: n.region, nodes: 0, capacity: 0, load: 0 };
        r.nodes++;
        r.capacity += n.capacity;
        r.load += n.load;
        regions.set(n.region, r);
      }
      const hosts = new Set([...feed.certs.values()].map((x) => x.host).concat([...feed.certStatus.values()].map((x) => x.host)));
      const certificates = [...hosts].sort().map((host) => {
        const cert = feed.certs.get(`certs/${host}`);
        const status = feed.certStatus.get(`cert-status/${host}`);
        return {
          host,
          state: status?.state ?? (cert ? 'issued' : 'none'),
          detail: status?.detail ?? '',
          notAfter: cert?.notAfter ?? null,
          issuer: cert?.issuer ?? null,
        };
      });
      return c.json({
        node: deps.nodeId,
        network: view.network(),
        nodes,
        regions: [...regions.values()],
        quorums: [...view.quorums.values()].map((q) => ({
          id: q.id,
          members: q.members,
          capacity: q.capacity ?? q.members.length,
          instances: perQuorum.get(q.id) ?? 0,
        })),
        gateways: [...view.gateways.values()].map((g) => ({
          id: g.id,
          machine: g.machine ?? null,
          startedAt: g.startedAt,
          metrics: g.metrics ?? null,
        })),
        certificates,
        events: feed.gatewayEvents.slice(-50),
      });
    });

    app.get('/v1/ui/instances/:name/metrics', async (c) => {
      const { signer } = await signedNoBody(c);
      const { spec } = await deps.service.authorized(c.req.param('name'), signer);
      sampler.touch();
      return c.json({ name: spec.name, intervalMs: 2_000, points: sampler.pointsOf(spec.name) });
    });

    app.get('/v1/ui/instances/:name/events', async (c) => {
      const { signer } = await signedNoBody(c);
      const { spec } = await deps.service.authorized(c.req.param('name'), signer);
      await feed.start();
      return c.json({ name: spec.name, events: feed.eventsOf(spec.name), network: feed.gatewayEvents.slice(-50) });
    });
  };

  return {
    routes,
    close: () => {
      sampler.stop();
      feed.close();
    },
  };
}
