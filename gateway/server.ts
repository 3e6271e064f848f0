/**
 * The gateway's Node entry. Listeners: plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge when enabled,
 * optionally behind a PROXY-protocol balancer) and HTTPS (HTTP/2 and HTTP/1.1 by ALPN). Every request goes
 * through the proxy engine (engine.ts) with Node's transports: undici pools for HTTP (transport-undici.ts),
 * HTTP/2 sessions for gRPC (transport-h2.ts), raw tunnels for upgrades (transport-tunnel.ts). Unknown hosts
 * get the Hono fallback app; a separate admin server (Hono) serves health, readiness and metrics.
 * `startGateway` reads as the list of what a gateway is: metrics, transports, routing, the engine, the
 * entry that feeds it, listeners, admin, and the order they stop in.
 */
import { timingSafeEqual } from 'node:crypto';
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
import type { SecureContext } from 'node:tls';
import { createServer as createTlsServer } from 'node:tls';
import { getRequestListener } from '@hono/node-server';
import type { Logger } from 'pino';
import { getExtensionData, readTlsClientHello } from 'read-tls-client-hello';
import type { CertManager } from '../cert/manager.js';
import { keys } from '../protocol/keys.js';
import type { Registry } from '../protocol/registry.js';
import { accessLogFor } from './access-log.js';
import { Activator, type ActivatorOptions } from './activator.js';
import { type AdminDeps, createAdminApp, createFallbackApp } from './app.js';
import { BodyRateGuard } from './body-rate.js';
import { parseIngressEndpoint } from './dial.js';
import { type ClientInfo, type EngineDeps, isGrpc, ProxyEngine } from './engine.js';
import { RetryBudget, RouteGate } from './gates.js';
import { DEFAULT_H2_LIMITS, guardSession, type H2Limits, h2ServerSettings } from './h2-guard.js';
import { makeTrustCheck } from './headers.js';
import { ActiveHealthChecker, type HealthCheckOptions } from './health.js';
import { Intake } from './intake.js';
import { proxiedClient, sniffingAcceptor } from './listeners.js';
import { LoadReporter } from './load-reporter.js';
import { GatewayMetrics } from './metrics.js';
import { NodeLink } from './node-link.js';
import { type ClientRequest, type ClientResponse, NodeHttpPort, NodeUpgradePort } from './node-port.js';
import { OutlierDetector } from './outlier.js';
import { PenaltyBox } from './penalty-box.js';
import { DEFAULT_POLICY, type GatewayPolicy } from './policy.js';
import { RoutingCore } from './routing.js';
import { H2SessionTransport } from './transport-h2.js';
import { TunnelTransport } from './transport-tunnel.js';
import { UndiciTransport } from './transport-undici.js';
import { validateRequest } from './validate.js';

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
  /**
   * The secret a Workers edge presents (x-allegra-edge) when it forwards a request: such a request is from a
   * trusted proxy, and routes by its X-Forwarded-Host (Workers cannot set Host). Unset: no edge is trusted.
   */
  edgeToken?: string;
}

export interface Gateway {
  httpPort: number;
  httpsPort: number | null;
  adminPort: number;
  core: RoutingCore;
  engine: ProxyEngine<NodeHttpPort | NodeUpgradePort>;
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
  const policy: GatewayPolicy = { ...DEFAULT_POLICY, ...opts.policy };
  const transports = {
    http: new UndiciTransport({ headersTimeoutMs: policy.tryTimeoutMs }),
    grpc: new H2SessionTransport((endpoint, err) => log.debug({ endpoint, err: err.message }, 'grpc upstream session error')),
    upgrade: new TunnelTransport(metrics),
  };
  // The activator holds requests for instances scaled to zero while they wake; the load reporter tells
  // the autoscaler what this gateway sees (held requests at once, the rest every tick).
  let reporter: LoadReporter | null = null;
  const activator = new Activator(opts.activator ?? {}, metrics.registry, log, (instanceId) => reporter?.heldChanged(instanceId));
  const routing = await startRouting(opts, {
    upstreamGone: (endpoint) => transports.http.release(endpoint),
    sever: (matches) => {
      transports.http.sever(matches);
      transports.grpc.sever(matches);
    },
    servable: (instanceId) => activator.release(instanceId),
  });
  const intake = new Intake({ onError: (err) => log.error({ err }, 'request handling failed') });
  const bodyRate = new BodyRateGuard(policy.minBodyBytesPerSec, policy.bodyRateWindowMs);
  let draining = false;
  const engine = new ProxyEngine<NodeHttpPort | NodeUpgradePort>({
    runtime: {
      name: 'node',
      maxAttempts: Number.POSITIVE_INFINITY,
      replayableBodies: true,
      pooledConnections: true,
      mintsSessions: true,
      defer: (c, job) => intake.push(c, job),
    },
    resolve: (host) => routing.core.resolve(host),
    transports: transports as EngineDeps<NodeHttpPort | NodeUpgradePort>['transports'],
    policy,
    gate: new RouteGate(),
    budget: new RetryBudget(policy.retryBudgetRatio, policy.retryBudgetMin),
    outliers: new OutlierDetector({
      ...policy, // its ejection settings: consecutive failures, base and longest ejection
      onEject: (id, ms) => {
        metrics.ejections.inc();
        log.warn({ upstream: id, ms }, 'replica ejected after failures');
      },
    }),
    metrics,
    log,
    accessLog: opts.accessLog === null ? null : accessLogFor(log),
    activator: {
      holds: (route) => activator.wouldHold(route, routing.core.view.instance(route.instanceName)),
      hold: (route, deadlineMs, request) => activator.hold(route, deadlineMs, request),
    },
    isDraining: () => draining,
  });
  reporter = new LoadReporter({
    registry: opts.registry,
    gatewayId: routing.link.id,
    leaseId: () => routing.link.leaseId,
    inFlight: () => engine.deps.gate.entries(),
    takeAdmitted: () => engine.takeAdmitted(),
    held: () => activator.heldCounts(),
    log,
    tickMs: opts.loadTickMs,
  });
  reporter.start();
  const entry = nodeEntry({ opts, engine, routing, intake, bodyRate, metrics });
  const listeners = await startListeners(opts, entry, metrics);
  const registryProbe = new RegistryProbe(opts.registry, opts.readiness?.maxRegistryStalenessMs ?? 30_000);
  const admin = await startAdmin(opts, {
    readiness: () => {
      const { core } = routing;
      if (!core.isReady) return 'route table not loaded';
      if (draining) return 'draining';
      const stale = registryProbe.staleness();
      if (stale) return stale;
      if (core.servableInstances === 0) return core.routeCount === 0 ? 'no route in the route table' : 'no route has a replica in rotation';
      return null;
    },
    metrics: async () => {
      collectRoutingMetrics(metrics, routing.core, engine, transports.http);
      return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
    },
  });
  log.info({ http: listeners.httpPort, https: listeners.httpsPort, admin: admin.port }, 'gateway listening');
  // Agents serving the UI sample these for its plots; a wildcard listener is reached on loopback (same machine).
  const host = opts.host ?? '127.0.0.1';
  const metricsHost = /^(0\.0\.0\.0|::|\[::\])$/.test(host) ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  await routing.link.publishMetrics(`http://${metricsHost}:${admin.port}/metrics`);

  let stopped: Promise<void> | null = null;
  return {
    httpPort: listeners.httpPort,
    httpsPort: listeners.httpsPort,
    adminPort: admin.port,
    core: routing.core,
    engine,
    metrics,
    stop: () => {
      stopped ??= (async () => {
        draining = true;
        reporter?.stop();
        activator.close();
        const closing = listeners.close();
        // In-flight requests get drainMs to finish; tunnels and whatever is left are cut after it.
        const deadline = new Promise<void>((r) => setTimeout(r, opts.drainMs ?? 10_000).unref());
        await Promise.race([engine.idle(), deadline]);
        transports.upgrade.closeAll();
        listeners.cut();
        await Promise.race([Promise.all([closing, admin.close()]), new Promise((r) => setTimeout(r, 1_000).unref())]);
        await routing.stop();
        registryProbe.close();
        await opts.certs?.stop();
        bodyRate.close();
        transports.grpc.close();
        await transports.http.close();
      })();
      return stopped;
    },
  };
}

interface Routing {
  core: RoutingCore;
  /** This gateway's identity and node liveness (its lease carries the load signals too). */
  link: NodeLink;
  stop(): Promise<void>;
}

/**
 * The routing core with what keeps its replica sets true: node liveness (NodeLink: replicas of nodes that
 * stop answering pings leave rotation) and the gateway's own active health checks.
 */
interface ConnectionHooks {
  /** A replica left the route table: its connections close once their requests are done. */
  upstreamGone(endpoint: string): void;
  /** A node stopped answering: every connection to the endpoints `matches` selects is cut at once. */
  sever(matches: (endpoint: string) => boolean): void;
  /** An instance went from no replica in rotation to at least one (the activator releases what it holds). */
  servable(instanceId: string): void;
}

async function startRouting(opts: GatewayOptions, hooks: ConnectionHooks): Promise<Routing> {
  const { log } = opts;
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
      if (down) hooks.sever((endpoint) => parseIngressEndpoint(endpoint)?.nodeId === nodeId);
    },
  });
  const nodeOfEndpoint = (endpoint: string) => parseIngressEndpoint(endpoint)?.nodeId;
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
        hooks.upstreamGone(endpoint);
        const node = nodeOfEndpoint(endpoint);
        if (node) link.untrack(node);
      },
      isDown: (endpoint) => {
        const node = nodeOfEndpoint(endpoint);
        return (node !== undefined && link.isDown(node)) || (health?.isDown(endpoint) ?? false);
      },
      localMachine: opts.machineId,
      // Deferred: the rebuild that made it servable finishes before held requests are forwarded.
      onServable: (instanceId) => setImmediate(() => hooks.servable(instanceId)),
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
  opts.certs?.checkRoutesWith((record) => core.servedRoute(record));
  return {
    core,
    link,
    stop: async () => {
      core.close();
      await link.stop();
      await health?.close();
    },
  };
}

interface EntryDeps {
  opts: GatewayOptions;
  engine: ProxyEngine<NodeHttpPort | NodeUpgradePort>;
  routing: Routing;
  intake: Intake;
  bodyRate: BodyRateGuard;
  metrics: GatewayMetrics;
}

/** What the listeners hand requests to: the Node side of the engine. */
export interface NodeEntry {
  request(proto: 'http' | 'https'): (req: ClientRequest, res: ClientResponse) => void;
  upgrade(proto: 'http' | 'https'): (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  clientAddress(socket: Duplex | Socket | undefined): { ip: string; trusted: boolean };
  /** The HTTPS port, once known, for redirects of exposed routes. */
  setHttpsPort(port: number): void;
}

/**
 * node:http and node:http2 → the engine. Every request is handled in the fair intake's turns (intake.ts),
 * never in the I/O callback that parsed it: a burst from one client then cannot delay another's request by
 * more than one turn, and an HTTP/2 stream reset in the same packet as its HEADERS (rapid reset) is closed
 * by the time its turn comes and is dropped before any routing or upstream work. Before the engine: ACME
 * HTTP-01 answers and HTTP → HTTPS redirects of exposed routes, which are this entry's alone.
 */
function nodeEntry({ opts, engine, routing, intake, bodyRate, metrics }: EntryDeps): NodeEntry {
  const isTrusted = makeTrustCheck(opts.trustedProxies ?? []);
  const edgeToken = opts.edgeToken ? Buffer.from(opts.edgeToken) : null;
  const clientAddress = (socket: Duplex | Socket | undefined) => {
    const peer = (socket as Socket | undefined)?.remoteAddress ?? '';
    // A PROXY header is only believed because the listener requires it (it sits behind a balancer).
    const ip = proxiedClient(socket)?.ip ?? peer;
    return { ip, trusted: isTrusted(peer) };
  };
  /**
   * Who sent a request. A trusted edge (Cloudflare Workers, which cannot set Host) proves itself with the
   * edge token and names the host in X-Forwarded-Host and the client in X-Forwarded-For.
   */
  const clientOf = (req: ClientRequest): ClientInfo => {
    const addr = clientAddress(req.socket);
    const presented = req.headers['x-allegra-edge'];
    if (edgeToken && typeof presented === 'string' && tokenMatches(presented, edgeToken)) {
      const forwardedHost = req.headers['x-forwarded-host'];
      return { ip: addr.ip, trusted: true, ...(typeof forwardedHost === 'string' ? { forwardedHost } : {}) };
    }
    return addr;
  };
  const fallback = getRequestListener(createFallbackApp().fetch);
  const notFound = (req: ClientRequest, res: ClientResponse) => void fallback(req as IncomingMessage, res as ServerResponse);
  const certs = opts.certs;
  let httpsPort = 443;

  const route = (proto: 'http' | 'https', req: ClientRequest, res: ClientResponse) => {
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
    const client = clientOf(req);
    const v = validateRequest(req, client.forwardedHost);
    if (v.ok && proto === 'http' && certs) {
      const r = routing.core.resolve(v.host);
      if (r.kind !== 'no-route' && r.route.tls?.redirectHttp && certs.hasCertificate(v.host)) {
        const location = `https://${v.host}${httpsPort === 443 ? '' : `:${httpsPort}`}${v.path}`;
        (res as ServerResponse).writeHead(308, { location, 'content-length': '0' });
        res.end();
        return;
      }
    }
    const grpc = req.httpVersionMajor === 2 && isGrpc(req.headers['content-type']);
    engine.handle(grpc ? 'grpc' : 'http', new NodeHttpPort(req, res, bodyRate, notFound), client, proto, v);
  };
  return {
    clientAddress,
    setHttpsPort: (port) => {
      httpsPort = port;
    },
    request: (proto) => (req, res) => {
      intake.push(clientAddress(req.socket).ip, () => {
        const gone =
          req.httpVersionMajor === 2
            ? (req as Http2ServerRequest).stream.closed || (req as Http2ServerRequest).stream.destroyed
            : (req.socket?.destroyed ?? true);
        if (gone) {
          metrics.clientAborts.labels('before-routing').inc();
          return;
        }
        route(proto, req, res);
      });
    },
    upgrade: (proto) => (req, socket, head) => {
      engine.handle('upgrade', new NodeUpgradePort(req, socket, head), clientOf(req), proto);
    },
  };
}

/** Constant-time comparison of a presented token with the expected one. */
function tokenMatches(presented: string, expected: Buffer): boolean {
  const got = Buffer.from(presented);
  return got.length === expected.length && timingSafeEqual(got, expected);
}

interface Listeners {
  httpPort: number;
  httpsPort: number | null;
  /** Stops accepting; open HTTP/2 sessions get GOAWAY and idle HTTP/1 connections are closed. */
  close(): Promise<void>;
  /** Cuts every connection left. */
  cut(): void;
}

/**
 * The plain port (HTTP/1.1, h2c with prior knowledge, optionally behind PROXY protocol) and the HTTPS port
 * (HTTP/2 and HTTP/1.1 by ALPN, TLS-ALPN-01 challenges), with the HTTP/2 abuse guard and the penalty box.
 */
async function startListeners(opts: GatewayOptions, entry: NodeEntry, metrics: GatewayMetrics): Promise<Listeners> {
  const { log } = opts;
  const h1Options = {
    maxHeaderSize: opts.maxHeaderBytes ?? 16 * 1024,
    headersTimeout: opts.headersTimeoutMs ?? 10_000,
    requestTimeout: opts.requestTimeoutMs ?? 300_000,
    keepAliveTimeout: opts.idleTimeoutMs ?? 60_000,
    // Check header/request deadlines every second instead of every 30 s, so slow clients are cut promptly.
    connectionsCheckingInterval: 1_000,
  };
  const host = opts.host ?? '127.0.0.1';
  const h1 = createServer(h1Options, entry.request('http'));
  h1.on('upgrade', entry.upgrade('http'));

  const h2Sessions = new Set<Http2Session>();
  const h2limits = { ...DEFAULT_H2_LIMITS, ...opts.http2 };
  const h2settings = h2ServerSettings(h2limits, opts.maxHeaderBytes ?? 16 * 1024);
  const penalties = new PenaltyBox(opts.abuseBlockMs ?? 10_000);
  /** The client behind a connection, unless it is a trusted proxy (blocking it would block everyone behind it). */
  const strike = (socket: Socket | undefined, why: string, detail: Record<string, unknown>) => {
    const { ip, trusted } = entry.clientAddress(socket);
    metrics.h2Abuse.labels(why).inc();
    log.warn({ peer: ip, why, ...detail }, 'HTTP/2 connection closed for abuse; address refused for a while');
    if (trusted) return;
    penalties.strike(ip);
    // The same client's other HTTP/2 connections go too: an attacker opens several at once.
    for (const s of h2Sessions) if (!s.destroyed && entry.clientAddress(s.socket as Socket).ip === ip) s.destroy(undefined, 11);
  };
  const guard = (server: Http2Server | Http2SecureServer) => {
    server.on('session', (session: Http2Session) => {
      h2Sessions.add(session);
      session.once('close', () => h2Sessions.delete(session));
      guardSession(session, h2limits, (resets) => strike(session.socket as Socket, 'rapid-reset', { resets }));
    });
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
  const h2c = opts.h2c === false ? null : createH2Server(h2settings, entry.request('http'));
  if (h2c) guard(h2c);

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
  const certs = opts.certs;
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
      entry.request('https'),
    );
    guard(https);
    https.on('upgrade', entry.upgrade('https'));
    // A raw TCP front, so blocked addresses are refused before the TLS handshake. With certificates it also
    // routes TLS-ALPN-01: a validation handshake offers only `acme-tls/1` and must get the challenge
    // certificate, which SNI alone cannot tell apart; the ClientHello is read first and the connection routed.
    const tlsServer = https;
    httpsFront = createNetServer(
      notBlocked(certs ? alpnChallengeAcceptor(https, certs) : (socket) => tlsServer.emit('connection', socket)),
    );
    if (opts.maxConnections) httpsFront.maxConnections = opts.maxConnections;
    httpsPort = await listen(httpsFront, host, opts.httpsPort ?? 0);
    entry.setHttpsPort(httpsPort);
  }
  const closeServer = (s: NetServer | Server | Http2SecureServer | Http2Server | null) =>
    new Promise<void>((r) => (s ? s.close(() => r()) : r()));
  return {
    httpPort,
    httpsPort,
    close: () => {
      const closing = Promise.all([
        closeServer(front),
        closeServer(front === h1 ? null : h1),
        closeServer(httpsFront),
        closeServer(https),
        closeServer(h2c),
      ]);
      h1.closeIdleConnections();
      for (const s of h2Sessions) s.close(); // GOAWAY: finish open streams, accept no new ones
      return closing.then(() => undefined);
    },
    cut: () => {
      h1.closeAllConnections();
      for (const s of h2Sessions) s.destroy();
    },
  };
}

/** The admin server (Hono): /healthz, /readyz, /metrics. */
async function startAdmin(opts: GatewayOptions, deps: AdminDeps): Promise<{ port: number; close(): Promise<void> }> {
  const admin = createServer(getRequestListener(createAdminApp(deps).fetch));
  const port = await listen(admin, opts.host ?? '127.0.0.1', opts.adminPort ?? 0);
  return {
    port,
    close: () => {
      admin.closeAllConnections();
      return new Promise<void>((r) => admin.close(() => r()));
    },
  };
}

/** Gauges computed at scrape time from the routing core, the route gate and the replica sets. */
function collectRoutingMetrics(
  metrics: GatewayMetrics,
  core: RoutingCore,
  engine: ProxyEngine<NodeHttpPort | NodeUpgradePort>,
  http: UndiciTransport,
): void {
  metrics.routes.set(core.routeCount);
  metrics.inFlight.set(engine.active);
  metrics.upstreamsHealthy.reset();
  metrics.upstreamsDown.reset();
  for (const c of core.upstreamCounts()) {
    metrics.upstreamsHealthy.labels(c.instance).set(c.inRotation);
    metrics.upstreamsDown.labels(c.instance).set(c.known - c.inRotation);
  }
  metrics.routeInFlight.reset();
  metrics.routeQueued.reset();
  for (const [instanceId, g] of engine.deps.gate.entries()) {
    const name = core.instanceName(instanceId);
    metrics.routeInFlight.labels(name).set(g.inFlight);
    metrics.routeQueued.labels(name).set(g.queued);
  }
  for (const g of [metrics.upstreamInFlight, metrics.upstreamLatency, metrics.upstreamWeight, metrics.upstreamEjected]) g.reset();
  for (const { instance, upstreams } of core.upstreamSets()) {
    for (const u of upstreams.all) {
      const st = upstreams.stats(u);
      const labels = { route: instance, upstream: u.endpoint };
      metrics.upstreamInFlight.set(labels, u.inFlight);
      metrics.upstreamLatency.set(labels, st.latencyMs / 1000);
      metrics.upstreamWeight.set(labels, st.weightRatio);
      metrics.upstreamEjected.set(labels, st.ejected ? 1 : 0);
    }
  }
  metrics.upstreamConnections.reset();
  for (const p of http.connections()) metrics.upstreamConnections.labels(p.endpoint).set(p.connected);
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
