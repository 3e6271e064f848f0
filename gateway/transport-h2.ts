/**
 * The Node gRPC transport. gRPC needs HTTP/2 end to end (its status travels in trailers and streams are
 * full-duplex), so a call with `content-type: application/grpc` goes to its replica over an HTTP/2 session
 * (h2c prior knowledge, one per replica, opened over dial.ts) instead of the HTTP/1.1 pool. Headers,
 * messages and trailers are relayed as they come, in both directions, with backpressure.
 */
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type Http2ServerRequest,
  type Http2ServerResponse,
} from 'node:http2';
import type { Duplex } from 'node:stream';
import { openUpstream, upstreamAddress } from './dial.js';
import type { NodeHttpPort } from './node-port.js';
import { classify } from './retry.js';
import type { AttemptHandle, AttemptRequest, AttemptSink, Transport } from './transport.js';
import type { Upstream } from './upstream.js';

const CONNECTION_SPECIFIC = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'host',
  'http2-settings',
]);

export class H2SessionTransport implements Transport<NodeHttpPort> {
  readonly name = 'h2-sessions';
  private readonly sessions = new Map<string, ClientHttp2Session>();
  /** Sessions whose connection is still being opened (the ingress accepts before HTTP/2 may start). */
  private readonly opening = new Map<string, Promise<ClientHttp2Session>>();

  constructor(private readonly onSessionError: (endpoint: string, err: Error) => void = () => {}) {}

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
      this.onSessionError(endpoint, err);
      forget();
    });
    session.on('goaway', forget);
    session.on('close', forget);
    this.sessions.set(endpoint, session);
    return session;
  }

  send(port: NodeHttpPort, req: AttemptRequest, upstream: Upstream, sink: AttemptSink): AttemptHandle {
    const client = port.req as Http2ServerRequest;
    const res = port.res as Http2ServerResponse;
    const h2headers: Record<string, string | string[]> = {
      [constants.HTTP2_HEADER_METHOD]: req.method,
      [constants.HTTP2_HEADER_PATH]: req.path,
      [constants.HTTP2_HEADER_SCHEME]: 'http',
      [constants.HTTP2_HEADER_AUTHORITY]: req.authority,
    };
    for (let i = 0; i < req.headers.length; i += 2) {
      const name = (req.headers[i] as string).toLowerCase();
      if (CONNECTION_SPECIFIC.has(name)) continue;
      const prev = h2headers[name];
      h2headers[name] = prev === undefined ? (req.headers[i + 1] as string) : ([] as string[]).concat(prev, req.headers[i + 1] as string);
    }
    // TE is hop-by-hop in general, but "te: trailers" is how gRPC says it understands trailers.
    if (client.headers.te === 'trailers') h2headers.te = 'trailers';

    let stopped = false;
    let stream: ClientHttp2Stream | null = null;
    let headSeen = false;
    const fail = (err: Error, before: boolean) => {
      if (stopped) return;
      stopped = true;
      // Before the response head: a session that could not open never reached the replica; a stream that
      // failed on an open session lost its connection. After it, the call is cut.
      sink.fail(err, before ? (stream ? 'connection-lost' : classify((err as NodeJS.ErrnoException).code ?? '')) : 'mid-response');
    };
    const open = (session: ClientHttp2Session) => {
      if (stopped) return;
      try {
        stream = session.request(h2headers);
      } catch (err) {
        return fail(err as Error, true);
      }
      const s = stream;
      s.on('response', (head, flags) => {
        const status = Number(head[constants.HTTP2_HEADER_STATUS] ?? 502);
        const fields: Record<string, string | string[] | undefined> = {};
        for (const [k, v] of Object.entries(head)) if (!k.startsWith(':') && !CONNECTION_SPECIFIC.has(k)) fields[k] = v;
        const out = stopped ? null : sink.head(status, fields);
        if (out === null) {
          stopped = true;
          s.close(constants.NGHTTP2_CANCEL);
          return;
        }
        headSeen = true;
        if (flags & constants.NGHTTP2_FLAG_END_STREAM) {
          // Trailers-only response (how gRPC reports an error without a message): it must reach the client
          // as one HEADERS frame that ends the stream, or clients read it as a broken call.
          s.unpipe(res);
          res.stream.respond({ [constants.HTTP2_HEADER_STATUS]: status, ...out }, { endStream: true });
          return;
        }
        res.writeHead(status, out);
      });
      s.on('trailers', (trailers) => {
        const out: Record<string, string> = {};
        for (const [k, v] of Object.entries(trailers))
          if (!k.startsWith(':') && v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : String(v);
        res.addTrailers(out);
      });
      s.on('error', (err) => {
        if (headSeen && !res.stream.closed) res.stream.close(constants.NGHTTP2_INTERNAL_ERROR);
        fail(err, !headSeen);
      });
      s.on('end', () => {
        if (stopped) return;
        stopped = true;
        sink.end();
      });
      s.pipe(res);
      client.pipe(s);
    };
    const got = this.session(upstream.endpoint);
    if (got instanceof Promise) got.then(open, (err: Error) => fail(err, true));
    else if (got.connecting) {
      // Open the stream only on a connected session: a replica that is gone then fails the call before any
      // byte of the request is read, so it can be retried elsewhere.
      const onConnect = () => {
        got.off('error', onError);
        open(got);
      };
      const onError = (err: Error) => {
        got.off('connect', onConnect);
        fail(err, true);
      };
      got.once('connect', onConnect);
      got.once('error', onError);
    } else open(got);
    return {
      abort: () => {
        stopped = true;
        if (stream && !stream.closed) stream.close(constants.NGHTTP2_CANCEL);
      },
    };
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
