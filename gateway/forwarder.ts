/**
 * The Node fast path: forwards a routed request from node:http (or the HTTP/2 compatibility API) to an
 * undici pool of the chosen replica through a dispatch handler of our own (exchange.ts), streaming both
 * ways with backpressure. Hono's Request/Response conversion would halve throughput on Node
 * (docs/ARCHITECTURE.md), so proxied traffic never goes through it.
 *
 * The forwarder owns what every transport shares: the route gate (admission), replica load and caps
 * (selection), the retry budget, the outlier detector, the body-rate guard and the connection pools.
 * Plain HTTP, gRPC (grpc.ts) and WebSocket handshakes (websocket.ts) all go through the same admission,
 * the same caps, the same deadlines and the same sticky choice.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Logger } from 'pino';
import { Pool } from 'undici';
import type { RouteRecord } from '../protocol/types.js';
import type { Balancer } from '../router/balancer.js';
import type { AccessLog } from './access-log.js';
import { BodyRateGuard } from './body-rate.js';
import { undiciConnect, upstreamAddress } from './dial.js';
import { Exchange, sendError } from './exchange.js';
import { type Decision, type QueuedAdmission, RetryBudget, RouteGate, type RouteLimits } from './gates.js';
import { GrpcCall, GrpcUpstreams, isGrpc } from './grpc.js';
import { upstreamRequestHeaders } from './headers.js';
import type { GatewayMetrics } from './metrics.js';
import { OutlierDetector } from './outlier.js';
import { DEFAULT_POLICY, type GatewayPolicy, type RequestPolicy, requestPolicy } from './policy.js';
import type { Upstream } from './routing.js';
import { type ReplicaCaps, ReplicaLoad } from './selector.js';

export { sendError };
export type ClientRequest = IncomingMessage | Http2ServerRequest;
export type ClientResponse = ServerResponse | Http2ServerResponse;

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

/** What the validate phase established about a request (validate.ts). */
export interface ValidatedTarget {
  /** Normalized host the route was looked up by. */
  host: string;
  /** Host header value to send upstream (with the port, as the client gave it). */
  authority: string;
  /** Origin-form target. */
  path: string;
}

export class Forwarder {
  readonly policy: GatewayPolicy;
  private readonly pools = new Map<string, Pool>();
  readonly gate = new RouteGate();
  readonly load = new ReplicaLoad();
  readonly caps: ReplicaCaps;
  readonly budget: RetryBudget;
  readonly bodyRate: BodyRateGuard;
  private readonly outliers: OutlierDetector;
  private readonly grpc: GrpcUpstreams;
  /** Requests being handled, for graceful drain. */
  active = 0;
  /** Requests admitted per route key (instance id) since the load reporter last took them. */
  private admittedSince = new Map<string, number>();
  draining = false;
  private idleWaiters: Array<() => void> = [];

  constructor(readonly opts: ForwarderOptions) {
    this.policy = { ...DEFAULT_POLICY, ...opts.policy };
    this.budget = new RetryBudget(this.policy.retryBudgetRatio, this.policy.retryBudgetMin);
    this.bodyRate = new BodyRateGuard(this.policy.minBodyBytesPerSec, this.policy.bodyRateWindowMs);
    this.caps = {
      perReplica: this.policy.maxInFlightPerReplica,
      perClient: Math.max(1, Math.ceil(this.policy.maxInFlightPerReplica * this.policy.maxClientShare)),
    };
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
      pool = new Pool(upstreamAddress(endpoint).origin, {
        connections: this.opts.connectionsPerReplica ?? 256,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        headersTimeout: this.policy.tryTimeoutMs,
        bodyTimeout: 0,
        connect: undiciConnect(endpoint),
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

  /**
   * Cuts every connection to the endpoints `matches` selects (a node that stopped answering): requests in
   * flight on them fail at once as lost connections — idempotent ones are retried on another replica —
   * instead of waiting out their deadline on a link that is gone.
   */
  sever(matches: (endpoint: string) => boolean): void {
    for (const [endpoint, pool] of [...this.pools]) {
      if (!matches(endpoint)) continue;
      this.pools.delete(endpoint);
      const lost = Object.assign(new Error(`the node of ${endpoint} stopped answering`), { code: 'ECONNRESET' });
      void pool.destroy(lost).catch(() => {});
    }
    this.grpc.sever(matches);
  }

  /** Connections open to each replica endpoint (undici pool stats), for metrics. */
  poolConnections(): Array<{ endpoint: string; connected: number; queued: number }> {
    return [...this.pools].map(([endpoint, p]) => ({ endpoint, connected: p.stats.connected, queued: p.stats.queued }));
  }

  routeLimits(policy: RequestPolicy): RouteLimits {
    return {
      limit: policy.maxInFlight,
      clientLimit: Math.max(1, Math.ceil(policy.maxInFlight * this.policy.maxClientShare)),
      queueLimit: this.policy.maxQueuedPerRoute,
    };
  }

  /** The admit phase, for every transport: a request waits at most its queue timeout, never past its deadline. */
  admit(routeKey: string, client: string, policy: RequestPolicy, decide: Decision): QueuedAdmission | null {
    this.active++;
    this.admittedSince.set(routeKey, (this.admittedSince.get(routeKey) ?? 0) + 1);
    const waitMs = Math.min(this.policy.queueTimeoutMs, policy.timeoutMs);
    return this.gate.acquire(routeKey, client, this.routeLimits(policy), waitMs, decide);
  }

  /** Admissions per route key since the last call (the autoscaler's requests per second). */
  takeAdmitted(): Map<string, number> {
    const taken = this.admittedSince;
    this.admittedSince = new Map();
    return taken;
  }

  reportOutcome(balancer: Balancer<Upstream>, id: string, outcome: 'ok' | 'error' | 'connect'): void {
    this.outliers.report(balancer, id, outcome);
  }

  forward(
    req: ClientRequest,
    res: ClientResponse,
    target: ForwardTarget,
    validated: ValidatedTarget,
    proto: string,
    clientIp: string,
    trusted: boolean,
  ): void {
    const { host, authority, path } = validated;
    const policy = requestPolicy(this.policy, target.route.policy);
    const { headers, requestId } = upstreamRequestHeaders(req.rawHeaders, {
      clientIp,
      proto,
      host,
      authority,
      trusted,
      mintId: randomUUID,
    });
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > policy.maxBodyBytes) {
      // Refuse before reading: closing the connection keeps the client from pushing the whole body at us.
      this.opts.metrics.count(target.route.instanceName, 413);
      sendError(res, 413, requestId, `request body of ${declared} bytes exceeds the limit of ${policy.maxBodyBytes} for ${host}`, {
        connection: 'close',
      });
      return;
    }
    const id = { host, client: clientIp, requestId, path };
    if (req.httpVersionMajor === 2 && isGrpc(req.headers['content-type'])) {
      new GrpcCall(this, this.grpc, req as Http2ServerRequest, res as Http2ServerResponse, target, policy, headers, id).begin();
      return;
    }
    new Exchange(this, req, res, target, policy, headers, id).begin();
  }

  /** Called once per admitted-or-refused request when it is completely done. */
  done(): void {
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
    this.bodyRate.close();
    await Promise.allSettled(pools.map((p) => p.destroy()));
  }
}
