/**
 * The gateway's Workers entry (Cloudflare Workers; `wrangler.toml` at the top level deploys it). The same
 * proxy engine as the Node gateways (gateway/engine.ts) with the Workers branches of `Runtime`: plain HTTP
 * only (gRPC and WebSocket upgrades are answered 501: no HTTP/2 trailers to origins, and a tunnel would
 * hold an invocation open — that needs Durable Objects), a bounded number of attempts per request (the
 * subrequest limit), no replay of request bodies, no fair intake (each request is an invocation of its
 * own). Routes come from the route feed (edge/feed.ts): shards held by Durable Objects (route-shard.ts),
 * cached in isolate memory with a version check (route-cache.ts). Requests are forwarded to the origins —
 * the Node gateways — which pick the replica (fetch-transport.ts). Hono serves the feed endpoint and the
 * fallback 404; proxied requests go straight to the engine.
 */
import { Hono } from 'hono';
import { createFallbackApp } from '../gateway/app.js';
import { type EngineMetrics, isGrpc, ProxyEngine } from '../gateway/engine.js';
import { RetryBudget, RouteGate } from '../gateway/gates.js';
import { OutlierDetector } from '../gateway/outlier.js';
import { DEFAULT_POLICY } from '../gateway/policy.js';
import { UpstreamSet } from '../gateway/upstream.js';
import { validateRequest } from '../gateway/validate.js';
import { FEED_PATH, type FeedBatch, splitBatch } from './feed.js';
import { FetchTransport } from './fetch-transport.js';
import { RouteCache } from './route-cache.js';
import { WorkersPort } from './workers-port.js';
import type { EdgeEnv } from './workers-types.js';

export { RouteShard } from './route-shard.js';

/** Workers Logs collect what a Worker writes to the console: one JSON line per request. */
const consoleLog = {
  warn: (fields: Record<string, unknown>, message: string) => console.warn(JSON.stringify({ level: 40, msg: message, ...fields })),
};
const noMetrics: EngineMetrics = {
  count() {},
  observe() {},
  clientAbort() {},
  refusal() {},
  upstreamError() {},
  retry() {},
};

/** What one isolate keeps between requests: the engine, the origins' state, the route cache. */
interface Isolate {
  engine: ProxyEngine<WorkersPort>;
  routes: RouteCache;
  shards: number;
}

let isolate: Isolate | null = null;

function isolateFor(env: EdgeEnv): Isolate {
  if (isolate) return isolate;
  const shards = Math.max(1, Number(env.SHARDS ?? 4) || 4);
  const routes = new RouteCache(env.ROUTES, shards, Number(env.ROUTE_FRESH_MS ?? 1_000) || 1_000);
  const origins = new UpstreamSet();
  origins.set(
    env.ORIGINS.split(',')
      .map((o) => o.trim())
      .filter(Boolean)
      .map((origin) => ({ id: origin, endpoint: origin, nodeId: 'origin' })),
  );
  const policy = DEFAULT_POLICY;
  const engine = new ProxyEngine<WorkersPort>({
    runtime: {
      name: 'workers',
      maxAttempts: Math.max(1, Number(env.MAX_ATTEMPTS ?? 3) || 3),
      replayableBodies: false,
      pooledConnections: false,
      mintsSessions: false,
    },
    resolve: (host) => {
      const route = routes.peek(host);
      return route ? { kind: 'ok', route, upstreams: origins } : { kind: 'no-route' };
    },
    transports: { http: new FetchTransport(env.EDGE_TOKEN) },
    policy,
    // Per isolate: the origins enforce the real per-route limits; these only bound what one isolate holds.
    gate: new RouteGate(),
    budget: new RetryBudget(policy.retryBudgetRatio, policy.retryBudgetMin),
    // The gateway policy carries the ejection settings (consecutive failures, base and longest ejection).
    outliers: new OutlierDetector(policy),
    metrics: noMetrics,
    log: consoleLog,
    accessLog: (e) => console.log(JSON.stringify({ access: true, ...e })),
    isDraining: () => false,
  });
  isolate = { engine, routes, shards };
  return isolate;
}

/** Constant-time comparison of two strings. */
function sameSecret(a: string, b: string): boolean {
  if (a.length !== b.length || b.length === 0) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

const fallback = createFallbackApp();

const app = new Hono<{ Bindings: EdgeEnv }>();

// The route feed: the bridge's batches, split by shard and applied by each shard's Durable Object.
app.post(FEED_PATH, async (c) => {
  const token = c.req.header('authorization')?.replace(/^Bearer /, '') ?? '';
  if (!sameSecret(token, c.env.FEED_TOKEN)) return c.text('feed: unauthenticated\n', 401);
  const { shards } = isolateFor(c.env);
  const batch = (await c.req.json()) as FeedBatch;
  const parts = splitBatch(batch, shards);
  await Promise.all(
    [...parts].map(async ([i, part]) => {
      const stub = c.env.ROUTES.get(c.env.ROUTES.idFromName(`routes-${i}`));
      const res = await stub.fetch('https://shard/apply', { method: 'POST', body: JSON.stringify(part) });
      if (!res.ok) throw new Error(`shard ${i} answered ${res.status}`);
    }),
  );
  return c.json({ version: batch.version, shards: parts.size });
});

// Everything else is proxied: validate, find the route (from the isolate's cache or its shard), then the engine.
app.all('*', async (c) => {
  const { engine, routes } = isolateFor(c.env);
  const port = new WorkersPort(c.req.raw, (req) => fallback.fetch(req));
  const client = { ip: c.req.header('cf-connecting-ip') ?? '', trusted: false };
  const v = validateRequest(port.req);
  if (v.ok) await routes.get(v.host);
  const kind = port.req.headers.upgrade ? 'upgrade' : isGrpc(port.req.headers['content-type']) ? 'grpc' : 'http';
  engine.handle(kind, port, client, new URL(c.req.url).protocol === 'https:' ? 'https' : 'http', v);
  return port.response;
});

export default app;
