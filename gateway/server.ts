/**
 * The gateway's Node entry: one node:http server for user traffic (routed requests take the undici fast
 * path, everything else goes to the Hono fallback app) and a Hono admin server.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { Logger } from 'pino';
import { normalizeHost } from '../protocol/keys.js';
import type { Registry } from '../protocol/registry.js';
import { createAdminApp, createFallbackApp } from './app.js';
import { GatewayMetrics } from './metrics.js';
import { type ProxyOptions, sendError, UpstreamProxy } from './proxy.js';
import { RoutingCore } from './routing.js';

export interface GatewayOptions {
  registry: Registry;
  log: Logger;
  host?: string;
  httpPort?: number;
  adminPort?: number;
  proxy?: ProxyOptions;
}

export interface Gateway {
  httpPort: number;
  adminPort: number;
  core: RoutingCore;
  stop(): Promise<void>;
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const metrics = new GatewayMetrics();
  const proxy = new UpstreamProxy(metrics, opts.log, opts.proxy);
  const core = await new RoutingCore(opts.registry, { onUpstreamGone: (endpoint) => proxy.release(endpoint) }).start();
  const fallback = getRequestListener(createFallbackApp().fetch);

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const host = normalizeHost(req.headers.host);
    const resolution = core.resolve(host);
    if (resolution.kind === 'ok') return proxy.forward(req, res, host, resolution.balancer, 'http');
    if (resolution.kind === 'no-replica') {
      metrics.count(503);
      return sendError(
        res,
        503,
        (req.headers['x-request-id'] as string | undefined) ?? crypto.randomUUID(),
        `no healthy replica for ${host}: ${resolution.reason}`,
        { 'retry-after': '1' },
      );
    }
    metrics.count(404);
    void fallback(req, res);
  };

  const http = createServer({ keepAliveTimeout: 65_000, requestTimeout: 300_000, headersTimeout: 30_000 }, onRequest);
  const host = opts.host ?? '127.0.0.1';
  const httpPort = await listen(http, host, opts.httpPort ?? 0);

  const adminApp = createAdminApp({
    isReady: () => core.isReady,
    metrics: async () => {
      metrics.routes.set(core.routeCount);
      return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
    },
  });
  const admin = createServer(getRequestListener(adminApp.fetch));
  const adminPort = await listen(admin, host, opts.adminPort ?? 0);
  opts.log.info({ http: httpPort, admin: adminPort }, 'gateway listening');

  return {
    httpPort,
    adminPort,
    core,
    stop: async () => {
      const closed = Promise.all([new Promise((r) => http.close(r)), new Promise((r) => admin.close(r))]);
      http.closeIdleConnections();
      admin.closeAllConnections();
      // In-flight requests get a moment to finish before connections are cut.
      const deadline = setTimeout(() => http.closeAllConnections(), 5_000);
      await closed;
      clearTimeout(deadline);
      core.close();
      await proxy.close();
    },
  };
}
