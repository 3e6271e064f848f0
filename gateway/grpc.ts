/**
 * gRPC pass-through. gRPC needs HTTP/2 end to end (its status travels in trailers and streams are
 * full-duplex), so a request with `content-type: application/grpc` goes to its replica over an HTTP/2
 * session (h2c prior knowledge) instead of the HTTP/1.1 pool. Headers, messages and trailers are relayed
 * as they come, in both directions, with backpressure.
 */
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type IncomingHttpHeaders,
} from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { openUpstream, upstreamAddress } from './dial.js';
import { sendError } from './exchange.js';
import type { Forwarder, ForwardTarget } from './forwarder.js';
import type { QueuedAdmission, Refusal } from './gates.js';
import type { RequestPolicy } from './policy.js';
import type { Upstream } from './routing.js';
import { selectReplica, stickyKeyOf } from './selector.js';

const CONNECTION_SPECIFIC = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'host',
  'http2-settings',
]);

export function isGrpc(contentType: string | undefined): boolean {
  return contentType?.startsWith('application/grpc') === true;
}

export class GrpcUpstreams {
  private readonly sessions = new Map<string, ClientHttp2Session>();
  /** Sessions whose connection is still being opened (the ingress accepts before HTTP/2 may start). */
  private readonly opening = new Map<string, Promise<ClientHttp2Session>>();

  constructor(private readonly log: Logger) {}

  /** The HTTP/2 session to a replica: at once when one is open, else once its connection is ready. */
  private session(endpoint: string): ClientHttp2Session | Promise<ClientHttp2Session> {
    const s = this.sessions.get(endpoint);
    if (s && !s.closed && !s.destroyed) return s;
    const pending = this.opening.get(endpoint);
    if (pending) return pending;
    const opened = openUpstream(endpoint).then((socket) => this.adopt(endpoint, socket));
    this.opening.set(endpoint, opened);
    const done = () => this.opening.delete(endpoint);
    opened.then(done, done);
    return opened;
  }

  private adopt(endpoint: string, socket: Duplex): ClientHttp2Session {
    const session = connect(upstreamAddress(endpoint).origin, { createConnection: () => socket });
    const forget = () => {
      if (this.sessions.get(endpoint) === session) this.sessions.delete(endpoint);
    };
    session.on('error', (err) => {
      this.log.debug({ endpoint, err: err.message }, 'grpc upstream session error');
      forget();
    });
    session.on('goaway', forget);
    session.on('close', forget);
    this.sessions.set(endpoint, session);
    return session;
  }

  /**
   * Relays one gRPC call. `headers` is the flat list built for the replica (forwarding headers set).
   * Calls `done` once with the HTTP status (0 if the call never reached the replica) and the error, if any.
   * The returned function cancels the call (deadline, client gone).
   */
  forward(
    req: Http2ServerRequest,
    res: Http2ServerResponse,
    endpoint: string,
    host: string,
    headers: string[],
    done: (status: number, err?: Error) => void,
  ): (reason: Error) => void {
    const h2headers: Record<string, string | string[]> = {
      [constants.HTTP2_HEADER_METHOD]: req.method,
      [constants.HTTP2_HEADER_PATH]: req.url,
      [constants.HTTP2_HEADER_SCHEME]: 'http',
      [constants.HTTP2_HEADER_AUTHORITY]: host,
    };
    for (let i = 0; i < headers.length; i += 2) {
      const name = (headers[i] as string).toLowerCase();
      if (CONNECTION_SPECIFIC.has(name)) continue;
      const prev = h2headers[name];
      h2headers[name] = prev === undefined ? (headers[i + 1] as string) : ([] as string[]).concat(prev, headers[i + 1] as string);
    }
    // TE is hop-by-hop in general, but "te: trailers" is how gRPC says it understands trailers.
    if (req.headers.te === 'trailers') h2headers.te = 'trailers';

    let status = 0;
    let finished = false;
    let stream: ClientHttp2Stream | null = null;
    const finish = (err?: Error) => {
      if (finished) return;
      finished = true;
      done(status, err);
    };
    const cancel = (reason: Error) => {
      if (stream && !stream.closed) stream.close(constants.NGHTTP2_CANCEL);
      finish(reason);
    };
    // Open the stream only on a connected session: a replica that is gone then fails the call before any
    // byte of the request is read, so it can be retried elsewhere.
    const proceed = (session: ClientHttp2Session) => {
      if (finished) return;
      const open = () => {
        if (!finished) stream = this.open(session, req, res, h2headers, (s) => (status = s), finish);
      };
      if (!session.connecting) return open();
      const onConnect = () => {
        session.off('error', onError);
        open();
      };
      const onError = (err: Error) => {
        session.off('connect', onConnect);
        finish(err);
      };
      session.once('connect', onConnect);
      session.once('error', onError);
    };
    const got = this.session(endpoint);
    if (got instanceof Promise) got.then(proceed, (err: Error) => finish(err));
    else proceed(got);
    return cancel;
  }

  private open(
    session: ClientHttp2Session,
    req: Http2ServerRequest,
    res: Http2ServerResponse,
    h2headers: Record<string, string | string[]>,
    setStatus: (status: number) => void,
    finish: (err?: Error) => void,
  ): ClientHttp2Stream | null {
    let status = 0;
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(h2headers);
    } catch (err) {
      finish(err as Error);
      return null;
    }
    stream.on('response', (head: IncomingHttpHeaders, flags: number) => {
      status = Number(head[constants.HTTP2_HEADER_STATUS] ?? 502);
      setStatus(status);
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(head)) if (!k.startsWith(':') && v !== undefined && !CONNECTION_SPECIFIC.has(k)) out[k] = v;
      if (flags & constants.NGHTTP2_FLAG_END_STREAM) {
        // Trailers-only response (how gRPC reports an error without a message): it must reach the
        // client as one HEADERS frame that ends the stream, or clients read it as a broken call.
        stream.unpipe(res);
        res.stream.respond({ [constants.HTTP2_HEADER_STATUS]: status, ...out }, { endStream: true });
        return;
      }
      res.writeHead(status, out);
    });
    stream.on('trailers', (trailers: IncomingHttpHeaders) => {
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(trailers))
        if (!k.startsWith(':') && v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
      res.addTrailers(out);
    });
    stream.on('error', (err) => {
      if (!res.headersSent) return finish(err);
      res.stream.close(constants.NGHTTP2_INTERNAL_ERROR);
      finish(err);
    });
    stream.on('end', () => finish());
    stream.pipe(res);
    req.pipe(stream);
    // The client cancelled: cancel the call on the replica too.
    res.on('close', () => {
      if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
    });
    return stream;
  }

  /** Destroys the sessions to the endpoints `matches` selects (their node stopped answering). */
  sever(matches: (endpoint: string) => boolean): void {
    for (const [endpoint, s] of [...this.sessions]) {
      if (!matches(endpoint)) continue;
      this.sessions.delete(endpoint);
      s.destroy();
    }
  }

  close(): void {
    for (const s of this.sessions.values()) s.destroy();
    this.sessions.clear();
  }
}

/**
 * One gRPC call through the same phases as plain HTTP: admission on the route gate, replica selection
 * (sticky, caps, per-client share), the route's deadline until the response starts, and retries only of
 * calls that never reached a replica and whose request was not read (calls are not known to be idempotent).
 */
export class GrpcCall {
  private readonly started = performance.now();
  private readonly tried: { set: Set<string> | null } = { set: null };
  private attempts = 0;
  private finished = false;
  private admitted = false;
  private queued: QueuedAdmission | null = null;
  private responded = false;
  private timer: NodeJS.Timeout | null = null;
  private cancel: ((reason: Error) => void) | null = null;
  private upstream: Upstream | null = null;

  constructor(
    private readonly fw: Forwarder,
    private readonly grpc: GrpcUpstreams,
    private readonly req: Http2ServerRequest,
    private readonly res: Http2ServerResponse,
    private readonly target: ForwardTarget,
    private readonly policy: RequestPolicy,
    private readonly headers: string[],
    private readonly id: { host: string; client: string; requestId: string; path: string },
  ) {}

  begin(): void {
    this.timer = setTimeout(() => this.onDeadline(), this.policy.timeoutMs);
    this.res.once('close', () => {
      if (this.finished) return;
      this.fw.opts.metrics.clientAborts.labels(this.queued ? 'queued' : this.res.headersSent ? 'streaming' : 'waiting').inc();
      this.queued?.cancel();
      this.queued = null;
      if (this.cancel) this.cancel(new Error('client cancelled the call'));
      else this.finish(499);
    });
    this.queued = this.fw.admit(this.target.route.instanceId, this.id.client, this.policy, (r) => this.onAdmission(r));
  }

  private onAdmission(refusal: Refusal | null): void {
    this.queued = null;
    if (this.finished) {
      if (refusal === null) this.fw.gate.release(this.target.route.instanceId, this.id.client);
      return;
    }
    if (refusal !== null) {
      this.fw.opts.metrics.refusals.labels(refusal).inc();
      return this.fail(refusal === 'client-share' ? 429 : 503, `route ${this.id.host} is at capacity; retry shortly`);
    }
    this.admitted = true;
    this.attempt();
  }

  private attempt(): void {
    const { balancer } = this.target;
    const sel = selectReplica(balancer, this.fw.load, this.fw.caps, this.id.client, stickyKeyOf(this.req.headers, this.policy), this.tried);
    const upstream = sel.upstream;
    if (!upstream)
      return this.fail(503, sel.full ? `every replica of ${this.id.host} is at capacity` : `no healthy replica for ${this.id.host}`);
    this.attempts++;
    this.upstream = upstream;
    balancer.onStart(upstream.id);
    this.fw.load.start(upstream.id, this.id.client);
    const t0 = performance.now();
    this.cancel = this.grpc.forward(this.req, this.res, upstream.endpoint, this.id.host, this.headers, (status, err) => {
      this.cancel = null;
      this.fw.load.end(upstream.id, this.id.client);
      if (this.finished || (this.res.destroyed && status === 0)) {
        // Cancelled (deadline, client gone): says nothing about the replica.
        balancer.onCancel(upstream.id);
        return this.finish(499);
      }
      if (status > 0 || this.res.headersSent) this.responded = true;
      balancer.onEnd(upstream.id, performance.now() - t0, !err && status > 0 && status < 500);
      if (err && status === 0 && !this.res.headersSent && !this.res.destroyed) {
        this.fw.reportOutcome(balancer, upstream.id, 'connect');
        (this.tried.set ??= new Set()).add(upstream.id);
        // Calls are not known to be idempotent: retry only if no byte of the request was read.
        if (this.attempts <= this.policy.retries && !this.req.readableDidRead) return this.attempt();
        return this.fail(
          502,
          `bad gateway: the replicas of ${this.id.host} failed (${(err as NodeJS.ErrnoException).code ?? err.message})`,
        );
      }
      this.finish(status || 502);
    });
  }

  private onDeadline(): void {
    this.timer = null;
    if (this.finished || this.responded || this.res.headersSent) return;
    this.queued?.cancel();
    this.queued = null;
    this.fail(504, `upstream timeout: ${this.id.host} did not answer within ${this.policy.timeoutMs} ms`);
    this.cancel?.(new Error('request deadline exceeded'));
  }

  private fail(status: number, message: string): void {
    if (this.finished) return;
    sendError(this.res, status, this.id.requestId, message, status === 503 || status === 429 ? { 'retry-after': '1' } : {});
    this.finish(status);
  }

  private finish(status: number): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    const ms = performance.now() - this.started;
    const { metrics, accessLog } = this.fw.opts;
    const route = this.target.route;
    metrics.count(route.instanceName, status);
    metrics.observe(route.instanceName, ms / 1000);
    accessLog?.({
      id: this.id.requestId,
      method: this.req.method,
      host: this.id.host,
      path: this.id.path,
      status,
      ms,
      grpc: true,
      upstream: this.upstream?.endpoint ?? '',
      attempts: this.attempts,
    });
    if (this.admitted) this.fw.gate.release(route.instanceId, this.id.client);
    this.fw.done();
  }
}
