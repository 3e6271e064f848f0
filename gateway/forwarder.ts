/**
 * The Node fast path: forwards a routed request from node:http (or the HTTP/2 compatibility API) to an
 * undici pool of the chosen replica through a dispatch handler of our own, streaming both ways with
 * backpressure. Hono's Request/Response conversion would halve throughput on Node (docs/ARCHITECTURE.md),
 * so proxied traffic never goes through it.
 *
 * Resilience, in the order a request meets it: the route's in-flight gate (503 + Retry-After when its
 * queue times out), body-size limit (413), replica pick (P2C, sticky if the route asks), per-replica
 * in-flight cap, per-try and whole-request deadlines (504), and retries on another replica when safe:
 * nothing of the request body was read and either the method is idempotent or the connection was refused,
 * within a retry budget. Every attempt's outcome feeds the balancer and the outlier detector.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { Transform } from 'node:stream';
import type { Logger } from 'pino';
import { type Dispatcher, Pool } from 'undici';
import type { RouteRecord } from '../protocol/types.js';
import type { Balancer } from '../router/balancer.js';
import type { AccessLog } from './access-log.js';
import { upstreamAddress } from './dial.js';
import { RetryBudget, RouteGate } from './gates.js';
import { GrpcUpstreams, isGrpc } from './grpc.js';
import { clientResponseHeaders, upstreamRequestHeaders } from './headers.js';
import type { GatewayMetrics } from './metrics.js';
import { OutlierDetector } from './outlier.js';
import { DEFAULT_POLICY, type GatewayPolicy, type RequestPolicy, requestPolicy } from './policy.js';
import type { Upstream } from './routing.js';

export type ClientRequest = IncomingMessage | Http2ServerRequest;
export type ClientResponse = ServerResponse | Http2ServerResponse;

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
/** Errors that mean the replica never received the request. */
const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

export function sendError(
  res: ClientResponse,
  status: number,
  requestId: string,
  message: string,
  extra: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `${message}\n`;
  (res as ServerResponse).writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    'x-request-id': requestId,
    'cache-control': 'no-store',
    ...extra,
  });
  res.end(body);
}

class BodyTooLarge extends Error {
  readonly code = 'ALLEGRA_BODY_TOO_LARGE';
}

/** Passes a request body through, failing once it exceeds `max` bytes (bodies without Content-Length). */
function limitBody(req: ClientRequest, max: number): Transform {
  let seen = 0;
  const limiter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > max) return cb(new BodyTooLarge(`request body exceeds ${max} bytes`));
      cb(null, chunk);
    },
  });
  req.on('error', (err) => limiter.destroy(err));
  req.pipe(limiter);
  return limiter;
}

export interface ForwarderOptions {
  metrics: GatewayMetrics;
  log: Logger;
  /** Access log: one line per request; null turns it off. */
  accessLog: AccessLog | null;
  policy?: Partial<GatewayPolicy>;
  connectionsPerReplica?: number;
}

export interface ForwardTarget {
  route: RouteRecord;
  balancer: Balancer<Upstream>;
}

export class Forwarder {
  readonly policy: GatewayPolicy;
  private readonly pools = new Map<string, Pool>();
  private readonly gate = new RouteGate();
  readonly budget: RetryBudget;
  private readonly outliers: OutlierDetector;
  private readonly inFlightByUpstream = new Map<string, number>();
  private readonly grpc: GrpcUpstreams;
  /** Requests being handled, for graceful drain. */
  active = 0;
  draining = false;
  private idleWaiters: Array<() => void> = [];

  constructor(readonly opts: ForwarderOptions) {
    this.policy = { ...DEFAULT_POLICY, ...opts.policy };
    this.budget = new RetryBudget(this.policy.retryBudgetRatio, this.policy.retryBudgetMin);
    this.grpc = new GrpcUpstreams(opts.log);
    this.outliers = new OutlierDetector({
      consecutiveFailures: this.policy.consecutiveFailures,
      baseEjectionMs: this.policy.baseEjectionMs,
      maxEjectionMs: this.policy.maxEjectionMs,
      onEject: (id, ms) => {
        opts.metrics.ejections.inc();
        opts.log.warn({ upstream: id, ms }, 'replica ejected after failures');
      },
    });
  }

  pool(endpoint: string): Pool {
    let pool = this.pools.get(endpoint);
    if (!pool) {
      const addr = upstreamAddress(endpoint);
      pool = new Pool(addr.origin, {
        ...(addr.socketPath ? { socketPath: addr.socketPath } : {}),
        connections: this.opts.connectionsPerReplica ?? 256,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        headersTimeout: this.policy.tryTimeoutMs,
        bodyTimeout: 0,
        connect: { timeout: 2_000 },
      });
      this.pools.set(endpoint, pool);
    }
    return pool;
  }

  /** Closes the pool of a replica that left, once its in-flight requests are done. */
  release(endpoint: string): void {
    const pool = this.pools.get(endpoint);
    if (!pool) return;
    this.pools.delete(endpoint);
    void pool.close().catch(() => {});
  }

  upstreamInFlight(id: string): number {
    return this.inFlightByUpstream.get(id) ?? 0;
  }

  addInFlight(id: string, delta: number): void {
    const n = (this.inFlightByUpstream.get(id) ?? 0) + delta;
    if (n <= 0) this.inFlightByUpstream.delete(id);
    else this.inFlightByUpstream.set(id, n);
  }

  reportOutcome(balancer: Balancer<Upstream>, id: string, outcome: 'ok' | 'error' | 'connect'): void {
    this.outliers.report(balancer, id, outcome);
  }

  forward(
    req: ClientRequest,
    res: ClientResponse,
    host: string,
    target: ForwardTarget,
    proto: string,
    clientIp: string,
    trusted: boolean,
  ): void {
    const policy = requestPolicy(this.policy, target.route.policy);
    const { headers, requestId } = upstreamRequestHeaders(req.rawHeaders, { clientIp, proto, host, trusted, mintId: randomUUID });
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > policy.maxBodyBytes) {
      // Refuse before reading: closing the connection keeps the client from pushing the whole body at us.
      this.opts.metrics.count(target.route.instanceName, 413);
      sendError(res, 413, requestId, `request body of ${declared} bytes exceeds the limit of ${policy.maxBodyBytes} for ${host}`, {
        connection: 'close',
      });
      return;
    }
    if (req.httpVersionMajor === 2 && isGrpc(req.headers['content-type'])) {
      this.forwardGrpc(req as Http2ServerRequest, res as Http2ServerResponse, host, target, headers, requestId);
      return;
    }
    this.active++;
    const admitted = this.gate.acquire(target.route.instanceId, policy.maxInFlight, this.policy.queueTimeoutMs);
    const start = (ok: boolean) => {
      if (!ok) {
        this.active--;
        this.opts.metrics.count(target.route.instanceName, 503);
        sendError(res, 503, requestId, `route ${host} is at capacity; retry shortly`, { 'retry-after': '1' });
        this.checkIdle();
        return;
      }
      new Exchange(this, req, res, host, target, policy, headers, requestId).start();
    };
    if (admitted === true) start(true);
    else if (admitted === false) start(false);
    else void admitted.then(start);
  }

  /**
   * gRPC calls are relayed over HTTP/2 (grpc.ts). They are not retried once sent (calls are not known to
   * be idempotent); a replica that cannot be reached is ejected and the call tried on another.
   */
  private forwardGrpc(
    req: Http2ServerRequest,
    res: Http2ServerResponse,
    host: string,
    target: ForwardTarget,
    headers: string[],
    requestId: string,
  ): void {
    const started = performance.now();
    const route = target.route;
    this.active++;
    const tried = new Set<string>();
    const attempt = () => {
      const upstream = target.balancer.pick(tried);
      if (!upstream) {
        this.opts.metrics.count(route.instanceName, 503);
        sendError(res, 503, requestId, `no healthy replica for ${host}`, { 'retry-after': '1' });
        this.active--;
        this.checkIdle();
        return;
      }
      target.balancer.onStart(upstream.id);
      const t0 = performance.now();
      this.grpc.forward(req, res, upstream.endpoint, host, headers, (status, err) => {
        target.balancer.onEnd(upstream.id, performance.now() - t0, !err && status > 0 && status < 500);
        if (err && status === 0 && !res.headersSent) {
          this.reportOutcome(target.balancer, upstream.id, 'connect');
          tried.add(upstream.id);
          // Calls are not known to be idempotent: retry only if no byte of the request was read.
          if (tried.size <= this.policy.retries && !req.readableDidRead) return attempt();
          sendError(
            res,
            502,
            requestId,
            `bad gateway: the replicas of ${host} failed (${(err as NodeJS.ErrnoException).code ?? err.message})`,
          );
          status = 502;
        }
        const final = status || 502;
        this.opts.metrics.count(route.instanceName, final);
        this.opts.metrics.observe(route.instanceName, (performance.now() - started) / 1000);
        this.opts.accessLog?.({
          id: requestId,
          method: req.method,
          host,
          path: req.url,
          status: final,
          ms: performance.now() - started,
          grpc: true,
          upstream: upstream.endpoint,
          attempts: tried.size + 1,
        });
        this.active--;
        this.checkIdle();
      });
    };
    attempt();
  }

  /** Called by an exchange when it is completely done. */
  done(routeKey: string): void {
    this.gate.release(routeKey);
    this.active--;
    this.checkIdle();
  }

  private checkIdle(): void {
    if (this.active === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves when no request is in flight (or at once if none is). */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    this.grpc.close();
    await Promise.allSettled(pools.map((p) => p.destroy()));
  }
}

/** One client request and its attempts. */
class Exchange {
  private readonly started = performance.now();
  private readonly method: string;
  private readonly hasBody: boolean;
  private body: ClientRequest | Transform | null = null;
  private tried: Set<string> | null = null;
  private attempts = 0;
  private current: Attempt | null = null;
  responseStarted = false;
  private finished = false;
  private timer: NodeJS.Timeout | null = null;
  private status = 0;
  private upstreamEndpoint = '';
  /** Why the previous attempt failed, reported if no replica is left to retry on. */
  private lastFailure = '';
  private lastTimedOut = false;
  private retriedSameReplica = false;
  private retrying = false;

  constructor(
    private readonly fw: Forwarder,
    readonly req: ClientRequest,
    readonly res: ClientResponse,
    private readonly host: string,
    private readonly target: ForwardTarget,
    readonly policy: RequestPolicy,
    private readonly headers: string[],
    readonly requestId: string,
  ) {
    this.method = req.method ?? 'GET';
    const cl = req.headers['content-length'];
    this.hasBody =
      cl !== undefined
        ? cl !== '0'
        : req.headers['transfer-encoding'] !== undefined ||
          (req.httpVersionMajor === 2 && !(req as Http2ServerRequest).stream?.endAfterHeaders);
  }

  start(): void {
    this.fw.budget.active++;
    if (this.hasBody) {
      const needsLimit = this.req.headers['content-length'] === undefined && Number.isFinite(this.policy.maxBodyBytes);
      this.body = needsLimit ? limitBody(this.req, this.policy.maxBodyBytes) : this.req;
    }
    this.timer = setTimeout(() => this.onDeadline(), this.policy.timeoutMs);
    this.res.once('close', () => {
      // The client went away before the response was complete: stop the upstream work too.
      if (!this.finished) this.current?.abort(new Error('client closed the connection'));
    });
    this.next();
  }

  private pickUpstream(): Upstream | undefined {
    const { balancer } = this.target;
    const exclude = this.tried ?? undefined;
    const stickyKey = this.stickyKey();
    for (let i = 0; i < 4; i++) {
      const u = stickyKey !== undefined ? balancer.pickSticky(stickyKey, exclude) : balancer.pick(exclude);
      if (!u) return undefined;
      if (this.fw.upstreamInFlight(u.id) < this.fw.policy.maxInFlightPerReplica) return u;
      // Full replica: skip it for this request and look for another.
      (this.tried ??= new Set()).add(u.id);
    }
    return undefined;
  }

  private stickyKey(): string | undefined {
    const { stickyHeader, stickyCookie } = this.policy;
    if (stickyHeader) {
      const v = this.req.headers[stickyHeader];
      if (typeof v === 'string' && v) return v;
    }
    if (stickyCookie) {
      const cookie = this.req.headers.cookie;
      if (cookie) {
        for (const part of cookie.split(';')) {
          const eq = part.indexOf('=');
          if (eq > 0 && part.slice(0, eq).trim() === stickyCookie) return part.slice(eq + 1).trim();
        }
      }
    }
    return undefined;
  }

  private next(): void {
    const upstream = this.pickUpstream();
    if (!upstream && this.attempts > 0) {
      if (this.lastTimedOut)
        this.fail(504, `upstream timeout: the replicas of ${this.host} did not answer within ${this.policy.tryTimeoutMs} ms`);
      else this.fail(502, `bad gateway: the replicas of ${this.host} failed (${this.lastFailure})`);
      return;
    }
    if (!upstream) {
      const atCapacity = this.tried !== null && this.tried.size > 0 && this.attempts === 0;
      this.fail(503, atCapacity ? `every replica of ${this.host} is at capacity` : `no healthy replica for ${this.host}`, {
        'retry-after': '1',
      });
      return;
    }
    this.attempts++;
    this.upstreamEndpoint = upstream.endpoint;
    const attempt = new Attempt(this, upstream, this.fw, this.target.balancer);
    this.current = attempt;
    this.fw.pool(upstream.endpoint).dispatch(
      {
        path: this.req.url ?? '/',
        method: this.method as Dispatcher.HttpMethod,
        headers: this.headers,
        body: this.body,
        headersTimeout: this.policy.tryTimeoutMs,
        bodyTimeout: 0,
      },
      attempt,
    );
  }

  /** The body has been (partly) consumed: the request cannot be replayed. */
  private bodyConsumed(): boolean {
    return this.hasBody && (this.req.readableDidRead || (this.body instanceof Transform && this.body.readableDidRead));
  }

  attemptFailed(attempt: Attempt, err: Error): void {
    if (attempt !== this.current || this.finished) return;
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (err instanceof BodyTooLarge) {
      this.fail(413, `request body exceeds the limit of ${this.policy.maxBodyBytes} bytes for ${this.host}`, { connection: 'close' });
      return;
    }
    if (this.responseStarted) {
      this.fw.opts.metrics.upstreamErrors.labels('mid-response').inc();
      this.res.destroy();
      this.finish(this.status);
      return;
    }
    if (this.res.destroyed) return this.finish(499);
    const notSent = NOT_SENT.has(code);
    const safe = !this.bodyConsumed() && (notSent || IDEMPOTENT.has(this.method));
    const timedOut = code === 'UND_ERR_HEADERS_TIMEOUT';
    this.fw.opts.metrics.upstreamErrors.labels(timedOut ? 'timeout' : notSent ? 'connect' : 'error').inc();
    this.lastFailure = code || err.message;
    this.lastTimedOut = timedOut;
    // A refused connection never reached a replica, so retrying it adds no load anywhere: the budget,
    // which exists to stop retry storms against struggling replicas, only applies to the other cases.
    if (safe && this.attempts <= this.policy.retries && (notSent || this.acquireBudget())) {
      // A reset on a reused keep-alive connection usually means the replica closed it while idle: the
      // replica itself is fine, so it may be tried once more on a fresh connection. Anything else
      // (refused, timed out, reset twice) excludes it for this request.
      const staleConnection = code === 'UND_ERR_SOCKET' || code === 'ECONNRESET';
      if (staleConnection && !this.retriedSameReplica) this.retriedSameReplica = true;
      else (this.tried ??= new Set()).add(attempt.upstream.id);
      this.fw.opts.metrics.retries.inc();
      this.next();
      return;
    }
    this.fw.opts.log.warn(
      {
        requestId: this.requestId,
        host: this.host,
        upstream: attempt.upstream.endpoint,
        code,
        err: err.message,
        attempts: this.attempts,
        safe,
        retriesInFlight: this.fw.budget.retries,
        active: this.fw.budget.active,
      },
      'upstream request failed',
    );
    if (timedOut) this.fail(504, `upstream timeout: ${this.host} did not answer within ${this.policy.tryTimeoutMs} ms`);
    else this.fail(502, `bad gateway: the replica of ${this.host} failed (${code || err.message})`);
  }

  /** Takes one retry slot from the budget (held until the exchange finishes). */
  private acquireBudget(): boolean {
    if (this.retrying) return true;
    if (!this.fw.budget.tryAcquire()) return false;
    this.retrying = true;
    return true;
  }

  private onDeadline(): void {
    this.timer = null;
    if (this.responseStarted || this.finished) return;
    // Answer first: aborting the attempt reports its error synchronously, and that must not retry.
    this.fail(504, `upstream timeout: ${this.host} did not answer within ${this.policy.timeoutMs} ms`);
    this.current?.abort(new Error('request deadline exceeded'));
  }

  private fail(status: number, message: string, extra?: Record<string, string>): void {
    if (this.finished) return;
    sendError(this.res, status, this.requestId, message, this.fw.draining ? { ...extra, connection: 'close' } : extra);
    this.finish(status);
  }

  writeHead(status: number, headers: Record<string, string | string[] | undefined>): void {
    this.responseStarted = true;
    this.status = status;
    (this.res as ServerResponse).writeHead(
      status,
      clientResponseHeaders(headers, this.requestId, this.fw.draining && this.req.httpVersionMajor === 1),
    );
  }

  finish(status: number): void {
    if (this.finished) return;
    this.finished = true;
    this.status = status;
    if (this.timer) clearTimeout(this.timer);
    if (this.retrying) this.fw.budget.release();
    this.fw.budget.active--;
    const ms = performance.now() - this.started;
    const { metrics, accessLog } = this.fw.opts;
    metrics.count(this.target.route.instanceName, status);
    metrics.observe(this.target.route.instanceName, ms / 1000);
    accessLog?.({
      id: this.requestId,
      method: this.method,
      host: this.host,
      path: this.req.url ?? '/',
      status,
      ms,
      upstream: this.upstreamEndpoint,
      attempts: this.attempts,
    });
    this.fw.done(this.target.route.instanceId);
  }

  get isFinished(): boolean {
    return this.finished;
  }
}

/** One try on one replica: the undici dispatch handler. */
class Attempt implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private readonly t0 = performance.now();
  private ttfb = 0;
  private ended = false;
  private onDrain: (() => void) | null = null;

  constructor(
    private readonly ex: Exchange,
    readonly upstream: Upstream,
    private readonly fw: Forwarder,
    private readonly balancer: Balancer<Upstream>,
  ) {
    balancer.onStart(upstream.id);
    fw.addInFlight(upstream.id, 1);
  }

  abort(reason: Error): void {
    this.controller?.abort(reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.ex.isFinished) controller.abort(new Error('request already answered'));
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (statusCode < 200) return; // 1xx: the gateway already handled Expect itself
    if (this.ex.isFinished) {
      controller.abort(new Error('request already answered'));
      return;
    }
    this.ttfb = performance.now() - this.t0;
    this.fw.reportOutcome(this.balancer, this.upstream.id, statusCode >= 500 ? 'error' : 'ok');
    this.ex.writeHead(statusCode, headers);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!(this.ex.res as ServerResponse).write(chunk)) {
      controller.pause();
      if (!this.onDrain) this.onDrain = () => controller.resume();
      this.ex.res.once('drain', this.onDrain);
    }
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    this.settle(true);
    const res = this.ex.res;
    let hasTrailers = false;
    for (const _ in trailers) {
      hasTrailers = true;
      break;
    }
    if (hasTrailers) res.addTrailers(trailers as Record<string, string>);
    res.end();
    this.ex.finish((res as ServerResponse).statusCode);
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    this.settle(false);
    if (!this.ex.responseStarted) this.fw.reportOutcome(this.balancer, this.upstream.id, NOT_SENT.has(code) ? 'connect' : 'error');
    this.ex.attemptFailed(this, err);
  }

  private settle(ok: boolean): void {
    if (this.ended) return;
    this.ended = true;
    this.fw.addInFlight(this.upstream.id, -1);
    this.balancer.onEnd(this.upstream.id, this.ttfb || performance.now() - this.t0, ok);
  }
}
