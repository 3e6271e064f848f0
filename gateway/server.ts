/**
 * The gateway's Node entry. Listeners: plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge when enabled,
 * optionally behind a PROXY-protocol balancer) and HTTPS (HTTP/2 and HTTP/1.1 by ALPN). Routed requests
 * take the undici fast path (forwarder.ts); upgrades are tunnelled (websocket.ts); everything else goes
 * to the Hono fallback app. A separate admin server (Hono) serves health, readiness and metrics.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import {
  createServer as createH2Server,
  createSecureServer,
  type Http2SecureServer,
  type Http2Server,
  type Http2ServerRequest,
  type Http2Session,
} from 'node:http2';
import { type AddressInfo, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type SecureContext } from 'node:tls';
import { getRequestListener } from '@hono/node-server';
import type { Logger } from 'pino';
import { getExtensionData, readTlsClientHello } from 'read-tls-client-hello';
import type { CertManager } from '../cert/manager.js';
import { keys } from '../protocol/keys.js';
import type { Registry } from '../protocol/registry.js';
import { accessLogFor } from './access-log.js';
import { Activator, type ActivatorOptions } from './activator.js';
import { createAdminApp, createFallbackApp } from './app.js';
import { parseIngressEndpoint } from './dial.js';
import { type ClientRequest, type ClientResponse, Forwarder, sendError } from './forwarder.js';
import { DEFAULT_H2_LIMITS, guardSession, type H2Limits, h2ServerSettings } from './h2-guard.js';
import { makeTrustCheck } from './headers.js';
import { ActiveHealthChecker, type HealthCheckOptions } from './health.js';
import { proxiedClient, sniffingAcceptor } from './listeners.js';
import { LoadReporter } from './load-reporter.js';
import { GatewayMetrics } from './metrics.js';
import { NodeLink } from './node-link.js';
import { PenaltyBox } from './penalty-box.js';
import { type GatewayPolicy, requestPolicy } from './policy.js';
import { RoutingCore } from './routing.js';
import { validateRequest } from './validate.js';
import { UpgradeProxy } from './websocket.js';

/**
 * TLS 1.2 suites offered: ECDHE with AEAD ciphers only (Mozilla's "intermediate" list). CBC suites are
 * left out (LUCKY13 and friends); TLS 1.3 suites are all AEAD and are configured separately by OpenSSL.
 */
export const TLS12_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export interface TlsOptions {
  /** PEM certificate chain and key served when no SNI match is found (or for every name). */
  cert: string | Buffer;
  key: string | Buffer;
  /** Per-name certificates (the registry-backed cache plugs in here). */
  sniContext?: (servername: string) => SecureContext | undefined;
}

export interface GatewayOptions {
  registry: Registry;
  log: Logger;
  host?: string;
  httpPort?: number;
  httpsPort?: number;
  adminPort?: number;
  tls?: TlsOptions;
  /** Accept HTTP/2 with prior knowledge on the plain HTTP port. Default true. */
  h2c?: boolean;
  /** Require a PROXY protocol (v1/v2) header on every connection to the plain HTTP port. */
  proxyProtocol?: boolean;
  /** Peers whose X-Forwarded-* and Forwarded headers are trusted (addresses or IPv4 CIDRs). */
  trustedProxies?: string[];
  policy?: Partial<GatewayPolicy>;
  /** Active health checks of replicas; false turns them off. */
  healthCheck?: Partial<Omit<HealthCheckOptions, 'onChange'>> | false;
  /** One line per request on the gateway logger's stream; null turns it off. */
  accessLog?: null;
  maxConnections?: number;
  maxHeaderBytes?: number;
  /** Time allowed to send the request headers (slowloris defence). */
  headersTimeoutMs?: number;
  /** Time allowed to send the whole request. */
  requestTimeoutMs?: number;
  /** Idle keep-alive connections are closed after this long. */
  idleTimeoutMs?: number;
  /** On stop, in-flight requests get this long to finish before connections are cut. */
  drainMs?: number;
  /** Certificates shared through the registry (ACME or local CA); enables HTTPS for exposed routes. */
  certs?: CertManager;
  /** This machine's id: replicas of nodes on other machines are reached through their node ingress. */
  machineId?: string;
  /** Offer TLS 1.3 only (default: TLS 1.2 with AEAD suites, and 1.3). */
  tls13Only?: boolean;
  /** Per-connection HTTP/2 limits (h2-guard.ts). */
  http2?: Partial<H2Limits>;
  /** How long a client address caught abusing HTTP/2 is refused new connections (doubling per strike); 0: never. */
  abuseBlockMs?: number;
  readiness?: {
    /** /readyz fails once the registry has not answered for this long (default 30 s). */
    maxRegistryStalenessMs?: number;
  };
  /** Holding requests for instances scaled to zero while they wake (activator.ts). */
  activator?: Partial<ActivatorOptions>;
  /** Load signals for the autoscaler (load-reporter.ts): tick length. */
  loadTickMs?: number;
}

export interface Gateway {
  httpPort: number;
  httpsPort: number | null;
  adminPort: number;
  core: RoutingCore;
  forwarder: Forwarder;
  metrics: GatewayMetrics;
  /** Graceful stop: stop accepting, let in-flight requests finish (up to drainMs), then close. */
  stop(): Promise<void>;
}

const ACME_PREFIX = '/.well-known/acme-challenge/';

/** Routes `acme-tls/1` handshakes to a responder holding the challenge certificates, others to `https`. */
function alpnChallengeAcceptor(https: Http2SecureServer, certs: CertManager): (socket: Socket) => void {
  const challenges = createTlsServer(
    { ALPNProtocols: ['acme-tls/1'], SNICallback: (name, cb) => cb(null, certs.alpnContext(name)) },
    (tlsSocket) => tlsSocket.end(),
  );
  challenges.on('tlsClientError', () => {});
  return (socket: Socket) => {
    socket.on('error', () => socket.destroy());
    const timer = setTimeout(() => socket.destroy(), 10_000);
    readTlsClientHello(socket).then(
      (hello) => {
        clearTimeout(timer);
        const protocols = getExtensionData(hello, 'alpn')?.protocols ?? [];
        (protocols.includes('acme-tls/1') ? challenges : https).emit('connection', socket);
      },
      () => {
        clearTimeout(timer);
        socket.destroy();
      },
    );
  };
}

function listen(server: NetServer | Server | Http2SecureServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const { log } = opts;
  const metrics = new GatewayMetrics();
  const forwarder = new Forwarder({
    metrics,
    log,
    accessLog: opts.accessLog === null ? null : accessLogFor(log),
    policy: opts.policy,
  });
  let health: ActiveHealthChecker | null = null;
  // Replicas on other machines: reached through their node's ingress, which admits this gateway's key.
  const link: NodeLink = new NodeLink({
    registry: opts.registry,
    log,
    machineId: opts.machineId,
    nodeOf: (nodeId) => {
      const node = core.view.node(nodeId);
      return node?.ingress ? { ingress: node.ingress, publicKey: node.publicKey } : undefined;
    },
    onNodeChange: (nodeId, down) => {
      // Out of rotation first, then cut: the requests the cut fails are retried on the replicas left.
      core.refresh();
      if (down) forwarder.sever((endpoint) => parseIngressEndpoint(endpoint)?.nodeId === nodeId);
    },
  });
  const nodeOfEndpoint = (endpoint: string) => parseIngressEndpoint(endpoint)?.nodeId;
  // Load signals for the autoscaler, and the activator that holds requests for sleeping instances.
  const reporter: LoadReporter = new LoadReporter({
    registry: opts.registry,
    gatewayId: link.id,
    leaseId: () => link.leaseId,
    inFlight: () => forwarder.gate.entries(),
    takeAdmitted: () => forwarder.takeAdmitted(),
    held: () => activator.heldCounts(),
    log,
    tickMs: opts.loadTickMs,
  });
  const activator: Activator = new Activator(opts.activator ?? {}, metrics.registry, log, (instanceId) => reporter.heldChanged(instanceId));
  const core = new RoutingCore(
    opts.registry,
    {
      onUpstreamAdded: (endpoint) => {
        health?.add(endpoint);
        const node = nodeOfEndpoint(endpoint);
        if (node) link.track(node);
      },
      onUpstreamGone: (endpoint) => {
        health?.remove(endpoint);
        forwarder.release(endpoint);
        const node = nodeOfEndpoint(endpoint);
        if (node) link.untrack(node);
      },
      isDown: (endpoint) => {
        const node = nodeOfEndpoint(endpoint);
        return (node !== undefined && link.isDown(node)) || (health?.isDown(endpoint) ?? false);
      },
      localMachine: opts.machineId,
      // Deferred: the rebuild that made it servable finishes before held requests are forwarded.
      onServable: (instanceId) => setImmediate(() => activator.release(instanceId)),
    },
    (host, reason) => log.warn({ host, reason }, 'route not served: its grants do not check out'),
  );
  if (opts.healthCheck !== false) {
    health = new ActiveHealthChecker({
      intervalMs: 2_000,
      timeoutMs: 1_000,
      path: '/',
      unhealthyThreshold: 2,
      healthyThreshold: 2,
      ...opts.healthCheck,
      onChange: (endpoint, down) => {
        log.warn({ endpoint, down }, down ? 'replica failed active health checks' : 'replica passes health checks again');
        core.refresh();
      },
    });
  }
  await link.start();
  await core.start();
  reporter.start();
  opts.certs?.checkRoutesWith((record) => core.servedRoute(record));

  const isTrusted = makeTrustCheck(opts.trustedProxies ?? []);
  const clientAddress = (socket: Duplex | Socket | undefined) => {
    const peer = (socket as Socket | undefined)?.remoteAddress ?? '';
    const proxied = proxiedClient(socket);
    // A PROXY header is only believed because the listener requires it (it sits behind a balancer).
    const ip = proxied?.ip ?? peer;
    return { ip, trusted: isTrusted(peer) };
  };
  const fallback = getRequestListener(createFallbackApp().fetch);

  const certs = opts.certs;
  let httpsPortForRedirect = 443;
  const handler = (proto: 'http' | 'https') => {
    const handle = route(proto);
    return (req: ClientRequest, res: ClientResponse) => {
      if (req.httpVersionMajor === 2) {
        // HTTP/2 requests are handled after the current read is processed: a stream reset in the same
        // packet as its HEADERS (rapid reset) is then dropped before any routing or upstream work.
        setImmediate(handleStream, handle, req, res);
        return;
      }
      handle(req, res);
    };
  };
  const handleStream = (handle: (req: ClientRequest, res: ClientResponse) => void, req: ClientRequest, res: ClientResponse) => {
    const stream = (req as Http2ServerRequest).stream;
    if (stream.closed || stream.destroyed) {
      metrics.clientAborts.labels('before-routing').inc();
      return;
    }
    handle(req, res);
  };
  const route = (proto: 'http' | 'https') => (req: ClientRequest, res: ClientResponse) => {
    const url = req.url ?? '/';
    if (certs && url.startsWith(ACME_PREFIX)) {
      // HTTP-01 answers come from the registry, so any gateway can answer for an order another placed.
      const answer = certs.http01Answer(url.slice(ACME_PREFIX.length).split('?')[0] as string);
      const body = answer ?? 'no pending ACME challenge for this token\n';
      (res as ServerResponse).writeHead(answer ? 200 : 404, {
        'content-type': 'text/plain',
        'content-length': String(Buffer.byteLength(body)),
      });
      res.end(body);
      return;
    }
    const v = validateRequest(req);
    if (!v.ok) {
      metrics.count('-', 400);
      return sendError(
        res,
        400,
        crypto.randomUUID(),
        `bad request: ${v.message}`,
        req.httpVersionMajor === 1 ? { connection: 'close' } : {},
      );
    }
    const host = v.host;
    const resolution = core.resolve(host);
    if (proto === 'http' && certs && resolution.kind !== 'no-route' && resolution.route.tls?.redirectHttp && certs.hasCertificate(host)) {
      const location = `https://${host}${httpsPortForRedirect === 443 ? '' : `:${httpsPortForRedirect}`}${v.path}`;
      (res as ServerResponse).writeHead(308, { location, 'content-length': '0' });
      res.end();
      return;
    }
    if (resolution.kind === 'ok') {
      const { ip, trusted } = clientAddress(req.socket);
      return forwarder.forward(req, res, resolution, v, proto, ip, trusted);
    }
    if (resolution.kind === 'no-replica' && activator.wouldHold(resolution.route, core.view.instance(resolution.route.instanceName))) {
      // Scaled to zero: hold the request while the instance wakes, then forward it like any other.
      const requestId = (req.headers['x-request-id'] as string | undefined) ?? crypto.randomUUID();
      const { timeoutMs } = requestPolicy(forwarder.policy, resolution.route.policy);
      return activator.hold(resolution.route, req, res, timeoutMs, requestId, () => {
        const now = core.resolve(host);
        if (now.kind !== 'ok') return 'no-replica';
        const { ip, trusted } = clientAddress(req.socket);
        if (!now.balancer.endpoints.some((u) => forwarder.load.hasRoom(u.id, ip, forwarder.caps))) return 'full';
        forwarder.forward(req, res, now, v, proto, ip, trusted);
        return 'forwarded';
      });
    }
    if (resolution.kind === 'no-replica') {
      metrics.count(resolution.route.instanceName, 503);
      return sendError(
        res,
        503,
        (req.headers['x-request-id'] as string | undefined) ?? crypto.randomUUID(),
        `no healthy replica for ${host}: ${resolution.reason}`,
        { 'retry-after': '1' },
      );
    }
    metrics.count('-', 404);
    void fallback(req as IncomingMessage, res as ServerResponse);
  };

  const h1Options = {
    maxHeaderSize: opts.maxHeaderBytes ?? 16 * 1024,
    headersTimeout: opts.headersTimeoutMs ?? 10_000,
    requestTimeout: opts.requestTimeoutMs ?? 300_000,
    keepAliveTimeout: opts.idleTimeoutMs ?? 60_000,
    // Check header/request deadlines every second instead of every 30 s, so slow clients are cut promptly.
    connectionsCheckingInterval: 1_000,
  };
  const host = opts.host ?? '127.0.0.1';
  const h1 = createServer(h1Options, handler('http'));
  const upgrades = new UpgradeProxy({ core, forwarder, metrics, log, clientAddress, proto: 'http' });
  h1.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => upgrades.handle(req, socket, head));

  const h2Sessions = new Set<Http2Session>();
  const trackSessions = (server: Http2Server | Http2SecureServer) =>
    server.on('session', (session: Http2Session) => {
      h2Sessions.add(session);
      session.once('close', () => h2Sessions.delete(session));
    });
  const h2limits = { ...DEFAULT_H2_LIMITS, ...opts.http2 };
  const h2settings = h2ServerSettings(h2limits, opts.maxHeaderBytes ?? 16 * 1024);
  const penalties = new PenaltyBox(opts.abuseBlockMs ?? 10_000);
  /** The client behind a connection, unless it is a trusted proxy (blocking it would block everyone behind it). */
  const strike = (socket: Socket | undefined, why: string, detail: Record<string, unknown>) => {
    const { ip, trusted } = clientAddress(socket);
    metrics.h2Abuse.labels(why).inc();
    log.warn({ peer: ip, why, ...detail }, 'HTTP/2 connection closed for abuse; address refused for a while');
    if (trusted) return;
    penalties.strike(ip);
    // The same client's other HTTP/2 connections go too: an attacker opens several at once.
    for (const s of h2Sessions) if (!s.destroyed && clientAddress(s.socket as Socket).ip === ip) s.destroy(undefined, 11);
  };
  const guard = (server: Http2Server | Http2SecureServer) => {
    server.on('session', (session: Http2Session) =>
      guardSession(session, h2limits, (resets) => strike(session.socket as Socket, 'rapid-reset', { resets })),
    );
    // nghttp2 gave up on the session: too many invalid frames or refused streams (stream floods).
    server.on('sessionError', (err: NodeJS.ErrnoException, session?: Http2Session) => {
      if (session && err.code?.startsWith('ERR_HTTP2_TOO_MANY')) strike(session.socket as Socket, 'flood', { code: err.code });
    });
  };
  const notBlocked =
    (accept: (socket: Socket) => void) =>
    (socket: Socket): void => {
      if (penalties.isBlocked(socket.remoteAddress)) {
        metrics.refusals.labels('penalty-box').inc();
        socket.destroy();
        return;
      }
      accept(socket);
    };
  const h2c = opts.h2c === false ? null : createH2Server(h2settings, handler('http'));
  if (h2c) {
    trackSessions(h2c);
    guard(h2c);
  }

  // The plain port: a raw TCP server that sniffs PROXY headers and the h2 preface, then hands over.
  const front =
    opts.proxyProtocol || h2c
      ? createNetServer(
          { pauseOnConnect: false },
          // Behind a PROXY-protocol balancer the peer is the balancer: the client is checked once its header is read.
          opts.proxyProtocol
            ? sniffingAcceptor({ proxyProtocol: true, h1, h2c, isBlocked: (ip) => penalties.isBlocked(ip) })
            : notBlocked(sniffingAcceptor({ proxyProtocol: false, h1, h2c })),
        )
      : h1;
  if (opts.maxConnections) front.maxConnections = opts.maxConnections;
  const httpPort = await listen(front, host, opts.httpPort ?? 0);
  // node:http starts tracking connections (header, request and idle deadlines) when it starts listening.
  // Behind the sniffing front server it never listens itself, so it is told the moment has come.
  if (front !== h1) h1.emit('listening');

  let https: Http2SecureServer | null = null;
  let httpsFront: NetServer | null = null;
  let httpsPort: number | null = null;
  if (opts.tls || certs) {
    const tls = opts.tls;
    const sni = (name: string) => certs?.sniContext(name) ?? tls?.sniContext?.(name);
    https = createSecureServer(
      {
        ...h2settings,
        allowHTTP1: true,
        minVersion: opts.tls13Only ? 'TLSv1.3' : 'TLSv1.2',
        ciphers: TLS12_CIPHERS,
        honorCipherOrder: true,
        ...(tls ? { cert: tls.cert, key: tls.key } : {}),
        SNICallback: (name, cb) => cb(null, sni(name)),
      },
      handler('https'),
    );
    trackSessions(https);
    guard(https);
    const tlsUpgrades = new UpgradeProxy({ core, forwarder, metrics, log, clientAddress, proto: 'https' });
    https.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => tlsUpgrades.handle(req, socket, head));
    // A raw TCP front, so blocked addresses are refused before the TLS handshake. With certificates it also
    // routes TLS-ALPN-01: a validation handshake offers only `acme-tls/1` and must get the challenge
    // certificate, which SNI alone cannot tell apart; the ClientHello is read first and the connection routed.
    const tlsServer = https;
    httpsFront = createNetServer(
      notBlocked(certs ? alpnChallengeAcceptor(https, certs) : (socket) => tlsServer.emit('connection', socket)),
    );
    if (opts.maxConnections) httpsFront.maxConnections = opts.maxConnections;
    httpsPort = await listen(httpsFront, host, opts.httpsPort ?? 0);
    httpsPortForRedirect = httpsPort;
  }

  const registryProbe = new RegistryProbe(opts.registry, opts.readiness?.maxRegistryStalenessMs ?? 30_000);
  const adminApp = createAdminApp({
    readiness: () => {
      if (!core.isReady) return 'route table not loaded';
      if (forwarder.draining) return 'draining';
      const stale = registryProbe.staleness();
      if (stale) return stale;
      if (core.servableInstances === 0) return core.routeCount === 0 ? 'no route in the route table' : 'no route has a replica in rotation';
      return null;
    },
    metrics: async () => {
      collectRoutingMetrics(metrics, core, forwarder);
      return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
    },
  });
  const admin = createServer(getRequestListener(adminApp.fetch));
  const adminPort = await listen(admin, host, opts.adminPort ?? 0);
  log.info({ http: httpPort, https: httpsPort, admin: adminPort }, 'gateway listening');
  // Agents serving the UI sample these for its plots; a wildcard listener is reached on loopback (same machine).
  const metricsHost = /^(0\.0\.0\.0|::|\[::\])$/.test(host) ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  await link.publishMetrics(`http://${metricsHost}:${adminPort}/metrics`);

  const closeServer = (s: NetServer | Server | Http2SecureServer | null) => new Promise<void>((r) => (s ? s.close(() => r()) : r()));
  let stopped: Promise<void> | null = null;
  return {
    httpPort,
    httpsPort,
    adminPort,
    core,
    forwarder,
    metrics,
    stop: () => {
      stopped ??= (async () => {
        forwarder.draining = true;
        reporter.stop();
        activator.close();
        const closing = Promise.all([
          closeServer(front),
          closeServer(front === h1 ? null : h1),
          closeServer(httpsFront),
          closeServer(https),
          closeServer(h2c as unknown as Server | null),
        ]);
        h1.closeIdleConnections();
        for (const s of h2Sessions) s.close(); // GOAWAY: finish open streams, accept no new ones
        const deadline = new Promise<void>((r) => setTimeout(r, opts.drainMs ?? 10_000).unref());
        await Promise.race([forwarder.idle(), deadline]);
        upgrades.closeAll();
        h1.closeAllConnections();
        for (const s of h2Sessions) s.destroy();
        admin.closeAllConnections();
        await Promise.race([Promise.all([closing, closeServer(admin)]), new Promise((r) => setTimeout(r, 1_000).unref())]);
        core.close();
        await link.stop();
        registryProbe.close();
        await certs?.stop();
        await health?.close();
        await forwarder.close();
      })();
      return stopped;
    },
  };
}

/** Gauges computed at scrape time from the routing core, the route gate and the replica balancers. */
function collectRoutingMetrics(metrics: GatewayMetrics, core: RoutingCore, forwarder: Forwarder): void {
  metrics.routes.set(core.routeCount);
  metrics.inFlight.set(forwarder.active);
  metrics.upstreamsHealthy.reset();
  metrics.upstreamsDown.reset();
  for (const c of core.upstreamCounts()) {
    metrics.upstreamsHealthy.labels(c.instance).set(c.inRotation);
    metrics.upstreamsDown.labels(c.instance).set(c.known - c.inRotation);
  }
  metrics.routeInFlight.reset();
  metrics.routeQueued.reset();
  for (const [instanceId, g] of forwarder.gate.entries()) {
    const name = core.instanceName(instanceId);
    metrics.routeInFlight.labels(name).set(g.inFlight);
    metrics.routeQueued.labels(name).set(g.queued);
  }
  for (const g of [metrics.upstreamInFlight, metrics.upstreamLatency, metrics.upstreamWeight, metrics.upstreamEjected]) g.reset();
  for (const { instance, balancer } of core.balancerEntries()) {
    for (const u of balancer.endpoints) {
      const st = balancer.stats(u.id);
      if (!st) continue;
      const labels = { route: instance, upstream: u.endpoint };
      metrics.upstreamInFlight.set(labels, forwarder.load.inFlight(u.id));
      metrics.upstreamLatency.set(labels, st.latencyMs / 1000);
      metrics.upstreamWeight.set(labels, st.effectiveWeight / (u.weight ?? 1));
      metrics.upstreamEjected.set(labels, st.ejected ? 1 : 0);
    }
  }
  metrics.upstreamConnections.reset();
  for (const p of forwarder.poolConnections()) metrics.upstreamConnections.labels(p.endpoint).set(p.connected);
}

/**
 * Whether the gateway's view of the registry is fresh: a cheap read every 2 s. Watches keep the view
 * current while the registry answers; once it has not answered for `maxStalenessMs`, readiness says so
 * (the gateway still serves what it has, but a balancer should prefer gateways that see changes).
 */
class RegistryProbe {
  private lastOk = performance.now();
  private readonly timer: NodeJS.Timeout;
  private inFlight = false;

  constructor(
    private readonly registry: Registry,
    private readonly maxStalenessMs: number,
  ) {
    this.timer = setInterval(() => this.probe(), 2_000);
    this.timer.unref();
  }

  private probe(): void {
    if (this.inFlight) return;
    this.inFlight = true;
    this.registry.get(keys.network()).then(
      () => {
        this.lastOk = performance.now();
        this.inFlight = false;
      },
      () => {
        this.inFlight = false;
      },
    );
  }

  /** Why the view is stale, or null when it is fresh. */
  staleness(): string | null {
    const age = performance.now() - this.lastOk;
    return age > this.maxStalenessMs ? `registry has not answered for ${Math.round(age / 1000)} s` : null;
  }

  close(): void {
    clearInterval(this.timer);
  }
}
