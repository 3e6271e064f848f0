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
  type Http2Session,
} from 'node:http2';
import { type AddressInfo, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type SecureContext } from 'node:tls';
import { getRequestListener } from '@hono/node-server';
import type { Logger } from 'pino';
import { getExtensionData, readTlsClientHello } from 'read-tls-client-hello';
import type { CertManager } from '../cert/manager.js';
import { normalizeHost } from '../protocol/keys.js';
import type { Registry } from '../protocol/registry.js';
import { accessLogFor } from './access-log.js';
import { createAdminApp, createFallbackApp } from './app.js';
import { type ClientRequest, type ClientResponse, Forwarder, sendError } from './forwarder.js';
import { hasDuplicateHost, makeTrustCheck } from './headers.js';
import { ActiveHealthChecker, type HealthCheckOptions } from './health.js';
import { proxiedClient, sniffingAcceptor } from './listeners.js';
import { GatewayMetrics } from './metrics.js';
import type { GatewayPolicy } from './policy.js';
import { RoutingCore } from './routing.js';
import { UpgradeProxy } from './websocket.js';

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
  const core = new RoutingCore(
    opts.registry,
    {
      onUpstreamAdded: (endpoint) => health?.add(endpoint),
      onUpstreamGone: (endpoint) => {
        health?.remove(endpoint);
        forwarder.release(endpoint);
      },
      isDown: (endpoint) => health?.isDown(endpoint) ?? false,
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
  await core.start();

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
  const handler = (proto: 'http' | 'https') => (req: ClientRequest, res: ClientResponse) => {
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
    if (req.httpVersionMajor === 1 && hasDuplicateHost(req.rawHeaders)) {
      // Node keeps the first Host and drops the rest; a proxy must refuse the ambiguity instead (RFC 9112 §3.2).
      metrics.count('-', 400);
      return sendError(res, 400, crypto.randomUUID(), 'bad request: more than one Host header', { connection: 'close' });
    }
    const authority = req.headers[':authority'] as string | undefined;
    const host = normalizeHost(authority ?? req.headers.host);
    if (authority !== undefined && req.headers.host !== undefined && normalizeHost(req.headers.host) !== host) {
      // RFC 9113 §8.3.1: a Host naming another entity than :authority makes the request malformed.
      metrics.count('-', 400);
      return sendError(res, 400, crypto.randomUUID(), 'bad request: Host header does not match :authority');
    }
    const resolution = core.resolve(host);
    if (proto === 'http' && certs && resolution.kind !== 'no-route' && resolution.route.tls?.redirectHttp && certs.hasCertificate(host)) {
      const location = `https://${host}${httpsPortForRedirect === 443 ? '' : `:${httpsPortForRedirect}`}${url}`;
      (res as ServerResponse).writeHead(308, { location, 'content-length': '0' });
      res.end();
      return;
    }
    if (resolution.kind === 'ok') {
      const { ip, trusted } = clientAddress(req.socket);
      return forwarder.forward(req, res, host, resolution, proto, ip, trusted);
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
  const h2settings = { maxSessionMemory: 64, settings: { maxHeaderListSize: opts.maxHeaderBytes ?? 16 * 1024 } };
  const h2c = opts.h2c === false ? null : createH2Server(h2settings, handler('http'));
  if (h2c) trackSessions(h2c);

  // The plain port: a raw TCP server that sniffs PROXY headers and the h2 preface, then hands over.
  const front =
    opts.proxyProtocol || h2c
      ? createNetServer({ pauseOnConnect: false }, sniffingAcceptor({ proxyProtocol: Boolean(opts.proxyProtocol), h1, h2c }))
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
        ...(tls ? { cert: tls.cert, key: tls.key } : {}),
        SNICallback: (name, cb) => cb(null, sni(name)),
      },
      handler('https'),
    );
    trackSessions(https);
    const tlsUpgrades = new UpgradeProxy({ core, forwarder, metrics, log, clientAddress, proto: 'https' });
    https.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => tlsUpgrades.handle(req, socket, head));
    if (certs) {
      // TLS-ALPN-01: a validation handshake offers only `acme-tls/1` and must get the challenge certificate,
      // which SNI alone cannot tell apart; the ClientHello is read first and the connection routed.
      httpsFront = createNetServer(alpnChallengeAcceptor(https, certs));
      if (opts.maxConnections) httpsFront.maxConnections = opts.maxConnections;
      httpsPort = await listen(httpsFront, host, opts.httpsPort ?? 0);
    } else {
      if (opts.maxConnections) https.maxConnections = opts.maxConnections;
      httpsPort = await listen(https, host, opts.httpsPort ?? 0);
    }
    httpsPortForRedirect = httpsPort;
  }

  const adminApp = createAdminApp({
    isReady: () => core.isReady && !forwarder.draining,
    metrics: async () => {
      metrics.routes.set(core.routeCount);
      metrics.inFlight.set(forwarder.active);
      metrics.upstreamsHealthy.reset();
      metrics.upstreamsDown.reset();
      for (const c of core.upstreamCounts()) {
        metrics.upstreamsHealthy.labels(c.instance).set(c.inRotation);
        metrics.upstreamsDown.labels(c.instance).set(c.known - c.inRotation);
      }
      return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
    },
  });
  const admin = createServer(getRequestListener(adminApp.fetch));
  const adminPort = await listen(admin, host, opts.adminPort ?? 0);
  log.info({ http: httpPort, https: httpsPort, admin: adminPort }, 'gateway listening');

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
        await certs?.stop();
        await health?.close();
        await forwarder.close();
      })();
      return stopped;
    },
  };
}
