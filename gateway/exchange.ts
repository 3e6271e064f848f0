/**
 * One proxied HTTP request through its phases: admit (route gate) → select (replica) → attempt (undici
 * dispatch) → decide retry → respond → log. An exchange holds exactly one route slot from admission to
 * its end and each attempt one replica slot; both are given back the moment the client goes away (an
 * HTTP/2 stream reset, a closed socket), whether the request is still queued, waiting for a replica
 * connection, or streaming its response: a reset stream must cost nothing once it is reset.
 */
import type { ServerResponse } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { Dispatcher } from 'undici';
import { BodyMeter, BodyTooLarge, BodyTooSlow } from './body-rate.js';
import type { ClientRequest, ClientResponse, Forwarder, ForwardTarget } from './forwarder.js';
import type { QueuedAdmission, Refusal } from './gates.js';
import { clientResponseHeaders } from './headers.js';
import type { RequestPolicy } from './policy.js';
import type { Upstream } from './routing.js';
import { selectReplica, sessionCookie, sessionOf } from './selector.js';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
/** Errors that mean the replica never received the request (ENOENT: a replica's Unix socket is gone with it). */
export const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOENT']);
/** Errors that mean the replica's end of the connection went away (closed, reset) before it answered. */
const CONNECTION_LOST = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

/** How long the rest of an unread request body is drained after the answer before the connection is cut. */
const DISCARD_LINGER_MS = 2_000;

/** How long a refusal for exceeding the client's share waits before it is sent. */
const REFUSAL_DELAY_MS = 500;

export class ClientGone extends Error {
  readonly code = 'ALLEGRA_CLIENT_GONE';
}

export interface Identity {
  host: string;
  /** Client address, the unit of fairness. */
  client: string;
  requestId: string;
  /** Origin-form target sent to the replica. */
  path: string;
}

export class Exchange {
  private readonly started = performance.now();
  private readonly method: string;
  private readonly hasBody: boolean;
  private body: BodyMeter | null = null;
  private readonly tried: { set: Set<string> | null } = { set: null };
  private attempts = 0;
  private current: Attempt | null = null;
  responseStarted = false;
  private finished = false;
  private admitted = false;
  private queued: QueuedAdmission | null = null;
  /** The client closed the connection or reset the stream before the response was complete. */
  clientGone = false;
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
    private readonly target: ForwardTarget,
    readonly policy: RequestPolicy,
    private readonly headers: string[],
    private readonly id: Identity,
  ) {
    this.method = req.method ?? 'GET';
    const cl = req.headers['content-length'];
    this.hasBody =
      cl !== undefined
        ? cl !== '0'
        : req.headers['transfer-encoding'] !== undefined ||
          (req.httpVersionMajor === 2 && !(req as Http2ServerRequest).stream?.endAfterHeaders);
  }

  get requestId(): string {
    return this.id.requestId;
  }

  /** Admission first; the whole-request deadline runs from here, so time spent queued counts. */
  begin(): void {
    this.fw.budget.active++;
    this.timer = setTimeout(() => this.onDeadline(), this.policy.timeoutMs);
    this.res.once('close', () => this.onClientClose());
    this.queued = this.fw.admit(this.target.route.instanceId, this.id.client, this.policy, (refusal) => this.onAdmission(refusal));
  }

  private onAdmission(refusal: Refusal | null): void {
    this.queued = null;
    if (this.finished) {
      // Decided after the exchange ended (cannot happen for a cancelled wait, kept for safety).
      if (refusal === null) this.fw.gate.release(this.target.route.instanceId, this.id.client);
      return;
    }
    if (refusal !== null) {
      this.fw.opts.metrics.refusals.labels(refusal).inc();
      if (refusal === 'client-share') {
        // Answered after a pause: a client over its share that ignores Retry-After would otherwise turn
        // instant refusals into a request flood that costs the gateway CPU every other route needs.
        const t = setTimeout(
          () => this.fail(429, `too many requests from your address in flight for ${this.id.host}; retry shortly`, { 'retry-after': '1' }),
          REFUSAL_DELAY_MS,
        );
        this.res.once('close', () => clearTimeout(t));
      } else this.fail(503, `route ${this.id.host} is at capacity; retry shortly`, { 'retry-after': '1' });
      return;
    }
    this.admitted = true;
    if (this.hasBody) {
      const max = this.req.headers['content-length'] === undefined ? this.policy.maxBodyBytes : Number.POSITIVE_INFINITY;
      this.body = new BodyMeter(this.req, max);
      this.fw.bodyRate.watch(this.body, () => this.onBodyTooSlow());
    }
    this.next();
  }

  private onClientClose(): void {
    if (this.finished) return;
    this.clientGone = true;
    this.fw.opts.metrics.clientAborts.labels(this.queued ? 'queued' : this.responseStarted ? 'streaming' : 'waiting').inc();
    if (this.queued) {
      this.queued.cancel();
      this.queued = null;
      this.finish(499);
      return;
    }
    if (this.current) this.current.abort(new ClientGone('client closed the connection'));
    else this.finish(499);
  }

  private onBodyTooSlow(): void {
    if (this.finished) return;
    this.fw.opts.metrics.refusals.labels('body-too-slow').inc();
    const err = new BodyTooSlow('request body too slow');
    this.fail(408, `request body arrived slower than ${this.fw.policy.minBodyBytesPerSec} bytes/s`, { connection: 'close' });
    this.current?.abort(err);
    this.body?.destroy(err);
    // The rest of the body will never be read: HTTP/1 closes the connection after the 408 (Connection:
    // close), HTTP/2 resets the stream once the answer is out.
    if (this.req.httpVersionMajor === 2) this.res.once('finish', () => (this.req as Http2ServerRequest).stream?.close());
  }

  private session: ReturnType<typeof sessionOf> | null = null;

  private next(): void {
    this.session ??= sessionOf(this.req.headers, this.policy);
    const sel = selectReplica(this.target.balancer, this.fw.load, this.fw.caps, this.id.client, this.session.key, this.tried);
    const upstream = sel.upstream;
    if (!upstream && this.attempts > 0) {
      if (this.lastTimedOut)
        this.fail(504, `upstream timeout: the replicas of ${this.id.host} did not answer within ${this.policy.tryTimeoutMs} ms`);
      else this.fail(502, `bad gateway: the replicas of ${this.id.host} failed (${this.lastFailure})`);
      return;
    }
    if (!upstream) {
      this.fail(503, sel.full ? `every replica of ${this.id.host} is at capacity` : `no healthy replica for ${this.id.host}`, {
        'retry-after': '1',
      });
      return;
    }
    this.attempts++;
    this.upstreamEndpoint = upstream.endpoint;
    const attempt = new Attempt(this, upstream, this.fw, this.target, this.id.client);
    this.current = attempt;
    this.fw.pool(upstream.endpoint).dispatch(
      {
        path: this.id.path,
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
    return this.hasBody && (this.req.readableDidRead || (this.body?.readableDidRead ?? false));
  }

  attemptFailed(attempt: Attempt, err: Error): void {
    if (attempt !== this.current || this.finished) return;
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (err instanceof BodyTooLarge) {
      this.fail(413, `request body exceeds the limit of ${this.policy.maxBodyBytes} bytes for ${this.id.host}`, { connection: 'close' });
      return;
    }
    if (this.clientGone || err instanceof ClientGone) return this.finish(499);
    if (this.responseStarted) {
      this.fw.opts.metrics.upstreamErrors.labels('mid-response').inc();
      this.res.destroy();
      this.finish(this.status);
      return;
    }
    const notSent = NOT_SENT.has(code);
    const connectionLost = CONNECTION_LOST.has(code);
    const safe = !this.bodyConsumed() && (notSent || IDEMPOTENT.has(this.method));
    const timedOut = code === 'UND_ERR_HEADERS_TIMEOUT';
    this.fw.opts.metrics.upstreamErrors.labels(timedOut ? 'timeout' : notSent ? 'connect' : 'error').inc();
    this.lastFailure = code || err.message;
    this.lastTimedOut = timedOut;
    // The retry budget exists to stop retry storms against replicas that answer slowly or badly. Two
    // kinds of failure are exempt: a refused connection never reached a replica, and a lost connection
    // (closed or reset by the replica before any answer) means the replica process or its connection is
    // gone. The second exemption is the fix for a failover flake: when a replica was SIGKILLed under
    // `wrk -c20`, everything in flight on it plus the requests that picked up its pooled connections
    // before undici saw them close (often more than 10) failed with UND_ERR_SOCKET at once, all needing a
    // retry, and the budget's floor of 10 answered the excess 502. The number of such retries is bounded
    // by what the dead replica held, and each request still gets at most `retries` extra attempts.
    if (safe && this.attempts <= this.policy.retries && (notSent || connectionLost || this.acquireBudget())) {
      // A lost keep-alive connection usually means the replica closed it while idle: the replica itself
      // is fine, so it may be tried once more on a fresh connection. Anything else (refused, timed out,
      // lost twice) excludes it for this request.
      if (connectionLost && !this.retriedSameReplica) this.retriedSameReplica = true;
      else (this.tried.set ??= new Set()).add(attempt.upstream.id);
      this.fw.opts.metrics.retries.inc();
      this.next();
      return;
    }
    this.fw.opts.log.warn(
      {
        requestId: this.id.requestId,
        host: this.id.host,
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
    if (timedOut) this.fail(504, `upstream timeout: ${this.id.host} did not answer within ${this.policy.tryTimeoutMs} ms`);
    else this.fail(502, `bad gateway: the replica of ${this.id.host} failed (${code || err.message})`);
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
    if (this.queued) {
      // Queued past its deadline: dropped before it is ever sent upstream.
      this.queued.cancel();
      this.queued = null;
    }
    // Answer first: aborting the attempt reports its error synchronously, and that must not retry.
    this.fail(504, `upstream timeout: ${this.id.host} did not answer within ${this.policy.timeoutMs} ms`);
    this.current?.abort(new Error('request deadline exceeded'));
  }

  private fail(status: number, message: string, extra?: Record<string, string>): void {
    if (this.finished) return;
    // A body we will not read keeps the connection busy for as long as the client sends it: close it.
    const unreadBody = this.hasBody && !this.req.readableEnded && this.req.httpVersionMajor === 1;
    const close = this.fw.draining || unreadBody;
    if (!this.clientGone) sendError(this.res, status, this.id.requestId, message, close ? { ...extra, connection: 'close' } : extra);
    this.finish(status);
  }

  writeHead(status: number, headers: Record<string, string | string[] | undefined>): void {
    this.responseStarted = true;
    this.status = status;
    const out = clientResponseHeaders(headers, this.id.requestId, this.fw.draining && this.req.httpVersionMajor === 1);
    const minted = this.session?.minted;
    if (minted && this.policy.stickyCookie) {
      const set = out['set-cookie'];
      const cookie = sessionCookie(this.policy.stickyCookie, minted);
      out['set-cookie'] = set === undefined ? [cookie] : ([] as string[]).concat(set, cookie);
    }
    (this.res as ServerResponse).writeHead(status, out);
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
    const route = this.target.route;
    metrics.count(route.instanceName, status);
    metrics.observe(route.instanceName, ms / 1000);
    accessLog?.({
      id: this.id.requestId,
      method: this.method,
      host: this.id.host,
      path: this.id.path,
      status,
      ms,
      upstream: this.upstreamEndpoint,
      attempts: this.attempts,
    });
    if (this.admitted) this.fw.gate.release(route.instanceId, this.id.client);
    this.fw.done();
    if (this.hasBody && !this.req.complete) this.discardRestOfBody();
  }

  /**
   * The answer is complete but the client is still sending a body nobody will read (the replica answered
   * early, e.g. 413). Left paused, that body would sit in front of the client's next request on the same
   * connection, which then never gets an answer. So the rest is read and thrown away — for a short while
   * only: a client that keeps sending loses the connection instead of keeping us busy.
   */
  private discardRestOfBody(): void {
    const req = this.req;
    if (this.body) {
      req.unpipe(this.body);
      this.body.destroy(); // also ends its watch by the body-rate guard
    }
    req.resume();
    const timer = setTimeout(() => {
      if (!req.complete) req.socket?.destroy();
    }, DISCARD_LINGER_MS);
    timer.unref();
    req.once('end', () => clearTimeout(timer));
  }

  get isFinished(): boolean {
    return this.finished;
  }
}

/** One try on one replica: the undici dispatch handler. */
class Attempt implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  /** An abort asked for before undici handed us a controller (the request was still queued in the pool). */
  private pendingAbort: Error | null = null;
  private readonly t0 = performance.now();
  private ttfb = 0;
  private ended = false;
  private onDrain: (() => void) | null = null;

  constructor(
    private readonly ex: Exchange,
    readonly upstream: Upstream,
    private readonly fw: Forwarder,
    private readonly target: ForwardTarget,
    private readonly client: string,
  ) {
    target.balancer.onStart(upstream.id);
    fw.load.start(upstream.id, client);
  }

  abort(reason: Error): void {
    if (this.controller && reason instanceof ClientGone) {
      // The client left: its slots are given back now; the upstream request is cancelled in a batch
      // (cancelling closes the replica connection, and a connection closing with hundreds of streams
      // would otherwise do all of that in one go while other requests wait).
      this.settle('cancelled');
      this.ex.attemptFailed(this, reason);
      cancelLater(this.controller, reason);
      return;
    }
    if (this.controller) {
      this.controller.abort(reason);
      return;
    }
    // Still waiting for a pooled connection: give the slots back now and drop the request when undici
    // gets to it (onRequestStart), so it is never sent.
    this.pendingAbort = reason;
    this.settle('cancelled');
    this.ex.attemptFailed(this, reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // Nothing of this request has been written yet. Aborting through the controller would destroy the
    // pooled connection it was about to use (undici cannot cancel otherwise); throwing here makes undici
    // drop the request before writing it and keep the connection for the next one. Under a rapid-reset
    // flood that is the difference between reusing connections and opening hundreds per replica.
    if (this.pendingAbort) throw this.pendingAbort;
    if (this.ex.isFinished) throw new Error('request already answered');
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
    this.fw.reportOutcome(this.target.balancer, this.upstream.id, statusCode >= 500 ? 'error' : 'ok');
    this.ex.writeHead(statusCode, headers);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.ex.clientGone) {
      controller.abort(new ClientGone('client closed the connection'));
      return;
    }
    if (!(this.ex.res as ServerResponse).write(chunk)) {
      controller.pause();
      if (!this.onDrain) this.onDrain = () => controller.resume();
      this.ex.res.once('drain', this.onDrain);
    }
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    this.settle('ok');
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
    const cancelled = this.ex.clientGone || err instanceof ClientGone;
    this.settle(cancelled ? 'cancelled' : 'failed');
    if (!this.ex.responseStarted && !cancelled)
      this.fw.reportOutcome(this.target.balancer, this.upstream.id, NOT_SENT.has(code) ? 'connect' : 'error');
    this.ex.attemptFailed(this, err);
  }

  private settle(outcome: 'ok' | 'failed' | 'cancelled'): void {
    if (this.ended) return;
    this.ended = true;
    this.fw.load.end(this.upstream.id, this.client);
    if (outcome === 'cancelled') this.target.balancer.onCancel(this.upstream.id);
    else this.target.balancer.onEnd(this.upstream.id, this.ttfb || performance.now() - this.t0, outcome === 'ok');
  }
}

export function sendError(
  res: ClientResponse,
  status: number,
  requestId: string,
  message: string,
  extra: Record<string, string> = {},
): void {
  if (res.headersSent || res.destroyed) {
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

const pendingCancels: Array<[Dispatcher.DispatchController, Error]> = [];

function cancelLater(controller: Dispatcher.DispatchController, reason: Error): void {
  if (pendingCancels.push([controller, reason]) === 1) setImmediate(runCancels);
}

function runCancels(): void {
  for (const [controller, reason] of pendingCancels.splice(0, 32)) controller.abort(reason);
  if (pendingCancels.length > 0) setImmediate(runCancels);
}
