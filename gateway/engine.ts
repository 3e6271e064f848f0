/**
 * The proxy engine: one request through the gateway, for every runtime (Node and Cloudflare Workers) and
 * every kind of request (plain HTTP, gRPC, WebSocket handshakes). Read it top to bottom; the phases are
 *
 *   validate → resolve → admit → select → attempt → decide retry → respond → log
 *
 * and each is one method of `Call` below, in that order. What differs between runtimes is not a second
 * implementation but an explicit branch on `Runtime` (what the runtime can carry, how many attempts one
 * request may make, whether work is ordered by a fair intake) and the two interfaces of transport.ts: the
 * client's side of a request (`ClientPort`) and the way attempts reach a replica (`Transport`).
 *
 * Shape taken from Pingora's `process_request` (one function naming each phase, hooks in one place) and
 * Caddy's reverseproxy (a loop of Select → RoundTrip over `Upstream`s that know whether they are available).
 *
 * The rules that hold whatever the kind of request:
 *  - a request holds one route slot from admission to its end and each attempt one replica slot; both are
 *    given back the moment the client goes away, whether the request is queued, waiting for a connection
 *    or streaming (a reset HTTP/2 stream costs nothing once it is reset);
 *  - the deadline runs from admission, so time spent queued counts; a request queued past it is dropped
 *    before it is sent anywhere;
 *  - retries follow `decideRetry` (retry.ts), a pure function, and never exceed the route's `retries`, the
 *    runtime's attempt limit or (for failures that are not connection failures) the retry budget;
 *  - every answer the gateway makes itself carries x-request-id and a one-line reason.
 */
import type { RouteRecord } from '../protocol/types.js';
import type { AccessLog } from './access-log.js';
import type { HeldRequest, HoldTicket } from './activator.js';
import type { Decision, QueuedAdmission, Refusal, RetryBudget, RouteGate, RouteLimits } from './gates.js';
import { clientResponseHeaders, requestIdOf, upstreamRequestHeaders } from './headers.js';
import type { OutlierDetector } from './outlier.js';
import { type GatewayPolicy, type RequestPolicy, requestPolicy } from './policy.js';
import { decideRetry, type Failure, type RequestKind } from './retry.js';
import { selectorFor, selectReplica, sessionCookie, sessionOf } from './selector.js';
import { type AttemptHandle, type AttemptRequest, type AttemptSink, ClientGone, type ClientPort, type Transport } from './transport.js';
import type { Caps, Upstream, UpstreamSet } from './upstream.js';
import { type Validation, validateRequest } from './validate.js';

// ─── What the engine is given ────────────────────────────────────────────────────────────────────────────

/** What a runtime can do; every difference between Node and Workers the engine knows of is here. */
export interface Runtime {
  readonly name: 'node' | 'workers';
  /** Attempts one request may make in all: Workers' subrequest limit per invocation; Infinity on Node. */
  readonly maxAttempts: number;
  /**
   * Whether a request body can be sent again after an attempt that did not read it. Node: yes (the body
   * waits in the socket until an attempt reads it). Workers: no, a request's body stream goes with its
   * first fetch, so requests with a body are never retried there.
   */
  readonly replayableBodies: boolean;
  /** Transports keep connections to replicas between requests (Node's pools; Workers' fetch: none visible). */
  readonly pooledConnections: boolean;
  /**
   * Whether this runtime gives a client a new sticky session cookie on routes whose cookie the gateway owns.
   * Node: yes, it picks the replica the cookie maps to. Workers: no, the edge forwards to a Node gateway,
   * which mints the cookie for the replica it picks (two minted cookies would disagree).
   */
  readonly mintsSessions: boolean;
  /**
   * Orders deferred work (delayed refusals, slow-body cuts) fairly between clients (Node's intake.ts).
   * Absent on Workers: each request is an invocation of its own and the platform schedules them.
   */
  readonly defer?: (client: string, job: () => void) => void;
}

/** Where a host leads (routing.ts on Node, the route feed's cache on Workers). */
export type Resolution =
  | { kind: 'ok'; route: RouteRecord; upstreams: UpstreamSet }
  | { kind: 'no-route' }
  | { kind: 'no-replica'; route: RouteRecord; reason: string };

export interface EngineMetrics {
  count(route: string, status: number): void;
  observe(route: string, seconds: number): void;
  clientAbort(phase: 'before-routing' | 'queued' | 'waiting' | 'streaming'): void;
  refusal(reason: string): void;
  upstreamError(reason: 'timeout' | 'connect' | 'error' | 'mid-response'): void;
  retry(): void;
}

export interface EngineLog {
  warn(fields: Record<string, unknown>, message: string): void;
}

/**
 * The hook for instances that sleep (scale to zero), in the resolve phase: a route without a replica in
 * rotation whose instance sleeps is held by the activator (activator.ts: bounded queues, a deadline, the
 * wake-up signal) instead of answered 503; it resumes the request through admit once a replica is up.
 * Absent on Workers: the Node gateway behind the edge holds the request.
 */
export interface Activator {
  holds(route: RouteRecord): boolean;
  hold(route: RouteRecord, deadlineMs: number, request: HeldRequest): HoldTicket | null;
}

export interface EngineDeps<P extends ClientPort> {
  runtime: Runtime;
  resolve: (host: string) => Resolution;
  transports: Partial<Record<RequestKind, Transport<P>>>;
  policy: GatewayPolicy;
  gate: RouteGate;
  budget: RetryBudget;
  outliers: OutlierDetector;
  metrics: EngineMetrics;
  log: EngineLog;
  accessLog: AccessLog | null;
  activator?: Activator;
  /** Draining: answers close their connection, and the access log says so. */
  isDraining: () => boolean;
}

/** Who sent the request. */
export interface ClientInfo {
  /** Client address (after PROXY protocol or a trusted edge), the unit of fairness. */
  ip: string;
  /** The peer is a trusted proxy: its forwarding headers are kept and appended to. */
  trusted: boolean;
  /** Set when a trusted edge forwarded the request for another host (Workers cannot set Host). */
  forwardedHost?: string;
}

/** gRPC calls are told by their content type (they need HTTP/2 end to end: their own transport). */
export function isGrpc(contentType: string | string[] | undefined): boolean {
  return typeof contentType === 'string' && contentType.startsWith('application/grpc');
}

/** How long a refusal for exceeding the client's share waits before it is sent: 400–600 ms (see `admit`). */
const REFUSAL_DELAY_MS = 400;
const REFUSAL_JITTER_MS = 200;

export class ProxyEngine<P extends ClientPort> {
  readonly caps: Caps;
  /** Requests being handled, for graceful drain. */
  active = 0;
  private idleWaiters: Array<() => void> = [];
  /** Requests admitted per instance id since the load reporter last took them (its requests per second). */
  private admittedSince = new Map<string, number>();

  constructor(readonly deps: EngineDeps<P>) {
    const p = deps.policy;
    this.caps = { perReplica: p.maxInFlightPerReplica, perClient: Math.max(1, Math.ceil(p.maxInFlightPerReplica * p.maxClientShare)) };
  }

  /** Proxies one request. `validation` may be passed when the entry already validated it. */
  handle(kind: RequestKind, port: P, client: ClientInfo, proto: string, validation?: Validation): void {
    new Call(this, kind, port, client, proto).run(validation ?? validateRequest(port.req, client.forwardedHost));
  }

  routeLimits(policy: RequestPolicy): RouteLimits {
    return {
      limit: policy.maxInFlight,
      clientLimit: Math.max(1, Math.ceil(policy.maxInFlight * this.deps.policy.maxClientShare)),
      queueLimit: this.deps.policy.maxQueuedPerRoute,
    };
  }

  countAdmitted(instanceId: string): void {
    this.admittedSince.set(instanceId, (this.admittedSince.get(instanceId) ?? 0) + 1);
  }

  /** Admissions per instance id since the last call. */
  takeAdmitted(): Map<string, number> {
    const taken = this.admittedSince;
    this.admittedSince = new Map();
    return taken;
  }

  /** Called once per request that reached the admit phase, when it is completely done. */
  done(): void {
    this.active--;
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
}

// ─── One request ─────────────────────────────────────────────────────────────────────────────────────────

class Call<P extends ClientPort> {
  private readonly started = performance.now();
  private readonly deps: EngineDeps<P>;
  private method = 'GET';
  private host = '';
  private path = '/';
  private authority = '';
  private requestId = '';
  /** The id minted for a request held by the activator (when the client sent none). */
  private heldId: string | undefined;
  private route: RouteRecord | null = null;
  private upstreams: UpstreamSet | null = null;
  private policy: RequestPolicy | null = null;
  private request: AttemptRequest | null = null;
  private transport: Transport<P> | null = null;
  private readonly tried: { set: Set<string> | null } = { set: null };
  private attempts = 0;
  private current: AttemptRun<P> | null = null;
  private queued: QueuedAdmission | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private admitted = false;
  private counted = false;
  private finished = false;
  private clientGone = false;
  private responseStarted = false;
  private status = 0;
  private upstreamEndpoint = '';
  private lastFailure = '';
  private lastTimedOut = false;
  private retriedSameReplica = false;
  private holdsRetrySlot = false;
  /** The sticky session key; `minted` when the gateway gave this client a new session cookie. */
  private session: { key: string | undefined; minted: string | undefined } | null = null;
  /** How long the activator held this request while its instance woke (null: it was not held). */
  private coldStartMs: number | null = null;

  constructor(
    private readonly engine: ProxyEngine<P>,
    private readonly kind: RequestKind,
    private readonly port: P,
    private readonly client: ClientInfo,
    private readonly proto: string,
  ) {
    this.deps = engine.deps;
  }

  get clientIp(): string {
    return this.client.ip;
  }

  get upstreamSet(): UpstreamSet {
    return this.upstreams as UpstreamSet;
  }

  run(v: Validation): void {
    if (!this.validate(v)) return;
    const resolution = this.resolve();
    if (resolution) this.admit(resolution);
  }

  // 1. validate: the request is one the gateway may route (validate.ts: Host, authority, target form).
  private validate(v: Validation): v is Extract<Validation, { ok: true }> {
    if (v.ok) {
      this.host = v.host;
      this.path = v.path;
      this.method = this.port.req.method ?? 'GET';
      this.authority = v.authority;
      return true;
    }
    this.deps.metrics.count('-', 400);
    this.port.error(400, crypto.randomUUID(), `bad request: ${v.message}`, {}, true);
    return false;
  }

  // 2. resolve: host → route → its replicas, from memory (no registry I/O per request).
  private resolve(): Extract<Resolution, { kind: 'ok' }> | null {
    const resolution = this.deps.resolve(this.host);
    if (resolution.kind === 'ok') return resolution;
    const requestId = requestIdOf(this.port.req.headers);
    if (resolution.kind === 'no-route') {
      this.deps.metrics.count('-', 404);
      this.port.notFound(requestId, this.host);
      return null;
    }
    if (this.deps.activator?.holds(resolution.route)) {
      this.hold(resolution.route, requestId);
      return null;
    }
    this.deps.metrics.count(resolution.route.instanceName, 503);
    this.port.error(503, requestId, `no healthy replica for ${this.host}: ${resolution.reason}`, { 'retry-after': '1' });
    return null;
  }

  // 2b. (a sleeping instance) hold: the activator keeps the request while the instance wakes, within the
  //     request's deadline, then resumes it here — resolved again, and admitted like any other.
  private hold(route: RouteRecord, requestId: string): void {
    const { deps, port } = this;
    this.heldId = requestId;
    const ticket = (deps.activator as Activator).hold(route, requestPolicy(deps.policy, route.policy).timeoutMs, {
      resume: (coldStartMs) => {
        const now = deps.resolve(this.host);
        if (now.kind !== 'ok') return 'no-replica';
        if (!now.upstreams.all.some((u) => u.available(this.client.ip, this.engine.caps))) return 'full';
        this.coldStartMs = coldStartMs;
        this.admit(now);
        return 'forwarded';
      },
      refuse: (message) => {
        deps.metrics.count(route.instanceName, 503);
        port.error(503, requestId, message, { 'retry-after': '1' });
      },
    });
    if (ticket) port.onClose(() => ticket.cancel());
  }

  // 3. admit: the route's policy, the forwarding headers, the size limit, then the route gate (per-route
  //    in-flight limit, bounded queue, per-client share). The deadline runs from here.
  private admit(r: Extract<Resolution, { kind: 'ok' }>): void {
    const { deps, port } = this;
    this.route = r.route;
    this.upstreams = r.upstreams;
    const policy = requestPolicy(deps.policy, r.route.policy);
    this.policy = policy;
    const { headers, requestId } = upstreamRequestHeaders(port.req.rawHeaders, {
      clientIp: this.client.ip,
      proto: this.proto,
      host: this.host,
      authority: this.authority,
      trusted: this.client.trusted,
      // A request held while its instance woke keeps the id its hold was given (and logged with).
      mintId: () => this.heldId ?? crypto.randomUUID(),
      upgrade: this.kind === 'upgrade',
    });
    this.requestId = requestId;
    // Runtime branch: what this runtime cannot carry is refused here, before it costs anything.
    const transport = deps.transports[this.kind];
    // The kinds a runtime carries are those it has a transport for; others are answered 501 (Workers: HTTP only).
    if (!transport) {
      deps.metrics.count(r.route.instanceName, 501);
      const what = this.kind === 'grpc' ? 'gRPC calls' : this.kind === 'upgrade' ? 'WebSocket upgrades' : 'requests';
      const here = deps.runtime.name === 'workers' ? 'the Workers edge' : 'this gateway';
      port.error(501, requestId, `${what} are not served by ${here}; connect to a gateway directly`);
      return;
    }
    this.transport = transport;
    const declared = port.req.headers['content-length'];
    if (declared !== undefined && Number(declared) > policy.maxBodyBytes) {
      // Refused before reading: closing the connection keeps the client from pushing the whole body at us.
      deps.metrics.count(r.route.instanceName, 413);
      port.error(
        413,
        requestId,
        `request body of ${declared} bytes exceeds the limit of ${policy.maxBodyBytes} for ${this.host}`,
        {},
        true,
      );
      return;
    }
    this.request = {
      method: this.method,
      path: this.path,
      authority: this.authority,
      headers,
      body: null,
      tryTimeoutMs: policy.tryTimeoutMs,
      requestId,
    };
    this.engine.active++;
    this.counted = true;
    deps.budget.active++;
    // A WebSocket handshake has the attempt's timeout as its deadline; other requests the whole-request one.
    const deadlineMs = this.kind === 'upgrade' ? policy.tryTimeoutMs : policy.timeoutMs;
    this.timer = setTimeout(() => this.onDeadline(), deadlineMs);
    port.onClose(() => this.onClientClose());
    const waitMs = Math.min(deps.policy.queueTimeoutMs, policy.timeoutMs);
    const decide: Decision = (refusal) => this.onAdmission(refusal);
    this.queued = deps.gate.acquire(r.route.instanceId, this.client.ip, this.engine.routeLimits(policy), waitMs, decide);
  }

  private onAdmission(refusal: Refusal | null): void {
    this.queued = null;
    const route = this.route as RouteRecord;
    if (this.finished) {
      if (refusal === null) this.deps.gate.release(route.instanceId, this.client.ip);
      return;
    }
    if (refusal !== null) return this.refuse(refusal);
    this.admitted = true;
    this.engine.countAdmitted(route.instanceId);
    this.proceed();
  }

  private refuse(refusal: Refusal): void {
    this.deps.metrics.refusal(refusal);
    if (refusal !== 'client-share') return this.fail(503, `route ${this.host} is at capacity; retry shortly`, { 'retry-after': '1' });
    const answer = () =>
      this.fail(429, `too many requests from your address in flight for ${this.host}; retry shortly`, { 'retry-after': '1' });
    // Answered after a pause (400–600 ms, spread so a wave of refusals does not come back as one wave of
    // retries): a client over its share that ignores Retry-After would otherwise turn instant refusals
    // into a request flood that costs the gateway CPU every other route needs. On Node the answer then
    // takes its turn in the client's own intake lane.
    const defer = this.deps.runtime.defer;
    const t = setTimeout(() => (defer ? defer(this.client.ip, answer) : answer()), REFUSAL_DELAY_MS + Math.random() * REFUSAL_JITTER_MS);
    this.port.onClose(() => clearTimeout(t));
  }

  private proceed(): void {
    if (this.finished) return;
    const { port } = this;
    const request = this.request as AttemptRequest;
    // Plain HTTP bodies are metered against the limit as they arrive and must keep a minimum rate. A gRPC
    // call's messages go to the replica as they come, at the call's own pace (a long-lived stream may be
    // quiet for minutes), and are read only once the call's stream is open, so a call that never reached
    // a replica can still be retried.
    if (port.hasBody && this.kind === 'http') {
      const max = port.req.headers['content-length'] === undefined ? (this.policy as RequestPolicy).maxBodyBytes : Number.POSITIVE_INFINITY;
      const tooSlow = () => this.bodyTooSlow();
      const defer = this.deps.runtime.defer;
      request.body = port.openBody(max, defer ? () => defer(this.client.ip, tooSlow) : tooSlow);
    }
    this.select();
  }

  // 4. select: a replica by the route's selector (sticky or P2C-EWMA), within the caps, not tried before.
  //    On a route whose sticky cookie the gateway owns, a plain HTTP client without one is given a new
  //    session here (its key picks the replica; the respond phase sets the cookie).
  private select(): void {
    const policy = this.policy as RequestPolicy;
    this.session ??= sessionOf(this.port.req.headers, policy, this.kind === 'http' && this.deps.runtime.mintsSessions);
    const sel = selectReplica(
      selectorFor(policy),
      this.upstreams as UpstreamSet,
      this.engine.caps,
      this.client.ip,
      this.session.key,
      this.tried,
    );
    if (sel.upstream) return this.attempt(sel.upstream);
    if (this.attempts > 0) {
      if (this.lastTimedOut)
        return this.fail(504, `upstream timeout: the replicas of ${this.host} did not answer within ${policy.tryTimeoutMs} ms`);
      return this.fail(502, `bad gateway: the replicas of ${this.host} failed (${this.lastFailure})`);
    }
    this.fail(503, sel.full ? `every replica of ${this.host} is at capacity` : `no healthy replica for ${this.host}`, {
      'retry-after': '1',
    });
  }

  // 5. attempt: one try on one replica through the request kind's transport.
  private attempt(upstream: Upstream): void {
    this.attempts++;
    this.upstreamEndpoint = upstream.endpoint;
    const run = new AttemptRun(this, upstream);
    this.current = run;
    upstream.start(this.client.ip);
    run.handle = (this.transport as Transport<P>).send(this.port, this.request as AttemptRequest, upstream, run);
  }

  /** The replica answered: the respond phase. */
  onHead(
    run: AttemptRun<P>,
    status: number,
    headers: Record<string, string | string[] | undefined>,
  ): Record<string, string | string[]> | null {
    if (run !== this.current || this.finished) return null;
    const upstreams = this.upstreams as UpstreamSet;
    this.deps.outliers.report(upstreams, run.upstream.id, status >= 500 ? 'error' : 'ok');
    return this.respond(status, headers);
  }

  onEnd(run: AttemptRun<P>): void {
    run.settle('ok');
    if (run === this.current) this.finish(this.status);
  }

  // 6. decide retry: what a failed attempt means (retry.ts), then try again, answer, or cut.
  onFailure(run: AttemptRun<P>, err: Error, failure: Failure): void {
    const cancelled = this.clientGone || failure === 'client-gone';
    run.settle(cancelled ? 'cancelled' : 'failed');
    if (run !== this.current || this.finished) return;
    const upstreams = this.upstreams as UpstreamSet;
    const policy = this.policy as RequestPolicy;
    if (!cancelled && !this.responseStarted)
      this.deps.outliers.report(upstreams, run.upstream.id, failure === 'not-sent' ? 'connect' : 'error');
    const code = (err as { code?: string }).code ?? '';
    const budget = this.deps.budget;
    const decision = decideRetry({
      kind: this.kind,
      failure: cancelled ? 'client-gone' : failure,
      method: this.method,
      responseStarted: this.responseStarted,
      bodyConsumed: this.port.hasBody && (!this.deps.runtime.replayableBodies || this.port.bodyConsumed()),
      attempts: this.attempts,
      retries: policy.retries,
      maxAttempts: this.deps.runtime.maxAttempts,
      retriedSameReplica: this.retriedSameReplica,
      pooledConnections: this.deps.runtime.pooledConnections,
      budget: this.holdsRetrySlot ? 'held' : budget.available() ? 'available' : 'exhausted',
    });
    if (decision.retry) {
      if (decision.takesBudget && budget.tryAcquire()) this.holdsRetrySlot = true;
      if (decision.sameReplica) this.retriedSameReplica = true;
      else (this.tried.set ??= new Set()).add(run.upstream.id);
      this.lastFailure = code || err.message;
      this.lastTimedOut = failure === 'timeout';
      this.deps.metrics.upstreamError(failure === 'timeout' ? 'timeout' : failure === 'not-sent' ? 'connect' : 'error');
      this.deps.metrics.retry();
      return this.select();
    }
    switch (decision.answer) {
      case 'client-gone':
        return this.finish(499);
      case 'cut':
        this.deps.metrics.upstreamError('mid-response');
        this.port.destroy();
        return this.finish(this.status);
      case 413:
        return this.fail(413, `request body exceeds the limit of ${policy.maxBodyBytes} bytes for ${this.host}`, {}, true);
      default:
        this.deps.metrics.upstreamError(failure === 'timeout' ? 'timeout' : failure === 'not-sent' ? 'connect' : 'error');
        this.deps.log.warn(
          {
            requestId: this.requestId,
            host: this.host,
            upstream: run.upstream.endpoint,
            code,
            err: err.message,
            attempts: this.attempts,
            kind: this.kind,
          },
          'upstream request failed',
        );
        if (decision.answer === 504)
          return this.fail(504, `upstream timeout: ${this.host} did not answer within ${policy.tryTimeoutMs} ms`);
        return this.fail(502, `bad gateway: the replica of ${this.host} failed (${code || err.message})`);
    }
  }

  // 7. respond: the replica's head for the client — hop-by-hop headers removed, x-request-id set, a minted
  //    session cookie added, and `Connection: close` while draining. A WebSocket 101 keeps its Upgrade and
  //    Connection headers.
  private respond(status: number, headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
    this.responseStarted = true;
    this.status = status;
    const out = clientResponseHeaders(headers, this.requestId, this.deps.isDraining() && this.port.req.httpVersionMajor === 1);
    const minted = this.session?.minted;
    const cookieName = (this.policy as RequestPolicy).stickyCookie;
    if (minted && cookieName) {
      const set = out['set-cookie'];
      const cookie = sessionCookie(cookieName, minted);
      out['set-cookie'] = set === undefined ? [cookie] : ([] as string[]).concat(set, cookie);
    }
    if (this.coldStartMs !== null) out['x-allegra-cold-start'] = String(Math.round(this.coldStartMs));
    if (this.kind === 'upgrade' && status === 101) {
      if (headers.upgrade !== undefined) out.upgrade = headers.upgrade;
      out.connection = 'Upgrade';
    }
    return out;
  }

  private onClientClose(): void {
    if (this.finished) return;
    this.clientGone = true;
    this.deps.metrics.clientAbort(this.queued ? 'queued' : this.responseStarted ? 'streaming' : 'waiting');
    if (this.queued) {
      this.queued.cancel();
      this.queued = null;
      return this.finish(499);
    }
    const run = this.current;
    if (run && !run.settled) {
      // The slots go back now; the transport cancels the upstream request in its own time.
      run.settle('cancelled');
      run.handle?.abort(new ClientGone('client closed the connection'));
    }
    this.finish(499);
  }

  private onDeadline(): void {
    this.timer = null;
    if (this.responseStarted || this.finished) return;
    if (this.queued) {
      // Queued past its deadline: dropped before it is ever sent upstream.
      this.queued.cancel();
      this.queued = null;
    }
    const ms = this.kind === 'upgrade' ? (this.policy as RequestPolicy).tryTimeoutMs : (this.policy as RequestPolicy).timeoutMs;
    // Answer first: the aborted attempt must not be retried.
    this.fail(504, `upstream timeout: ${this.host} did not ${this.kind === 'upgrade' ? 'accept the upgrade' : 'answer'} within ${ms} ms`);
    const run = this.current;
    if (run && !run.settled) {
      run.settle('cancelled');
      run.handle?.abort(new Error('request deadline exceeded'));
    }
  }

  private bodyTooSlow(): void {
    if (this.finished) return;
    this.deps.metrics.refusal('body-too-slow');
    const err = new Error('request body too slow');
    this.fail(408, `request body arrived slower than ${this.deps.policy.minBodyBytesPerSec} bytes/s`, {}, true);
    const run = this.current;
    if (run && !run.settled) {
      run.settle('cancelled');
      run.handle?.abort(err);
    }
    this.port.abandonBody(err);
  }

  /** The gateway answers itself (refusal, failure, timeout), then the request ends. */
  private fail(status: number, message: string, extra?: Record<string, string>, close = false): void {
    if (this.finished) return;
    if (!this.clientGone) this.port.error(status, this.requestId, message, extra, close || this.deps.isDraining());
    this.finish(status);
  }

  // 8. log: metrics, the access-log line, and the route slot given back.
  private finish(status: number): void {
    if (this.finished) return;
    this.finished = true;
    this.status = status;
    if (this.timer) clearTimeout(this.timer);
    const { deps } = this;
    if (this.holdsRetrySlot) deps.budget.release();
    const route = this.route as RouteRecord;
    const ms = performance.now() - this.started;
    deps.metrics.count(route.instanceName, status);
    deps.metrics.observe(route.instanceName, ms / 1000);
    deps.accessLog?.({
      id: this.requestId,
      method: this.method,
      host: this.host,
      path: this.path,
      status,
      ms,
      upstream: this.upstreamEndpoint,
      attempts: this.attempts,
      ...(this.kind === 'grpc' ? { grpc: true } : {}),
    });
    if (this.admitted) deps.gate.release(route.instanceId, this.client.ip);
    if (this.counted) {
      deps.budget.active--;
      this.engine.done();
    }
  }
}

/** One attempt: the sink its transport reports to, and the replica slot it holds until settled. */
class AttemptRun<P extends ClientPort> implements AttemptSink {
  handle: AttemptHandle | null = null;
  settled = false;
  private readonly t0 = performance.now();
  private ttfb = 0;

  constructor(
    private readonly call: Call<P>,
    readonly upstream: Upstream,
  ) {}

  head(status: number, headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> | null {
    this.ttfb = performance.now() - this.t0;
    return this.call.onHead(this, status, headers);
  }

  end(): void {
    this.call.onEnd(this);
  }

  fail(err: Error, failure: Failure): void {
    this.call.onFailure(this, err, failure);
  }

  /** Gives the replica slot back, once; what it says about the replica depends on the outcome. */
  settle(outcome: 'ok' | 'failed' | 'cancelled'): void {
    if (this.settled) return;
    this.settled = true;
    this.upstream.end(this.call.clientIp, outcome, this.ttfb || performance.now() - this.t0, this.call.upstreamSet);
  }
}
