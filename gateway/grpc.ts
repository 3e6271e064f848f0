/**
 * gRPC pass-through. gRPC needs HTTP/2 end to end (its status travels in trailers and streams are
 * full-duplex), so a request with `content-type: application/grpc` goes to its replica over an HTTP/2
 * session (h2c prior knowledge) instead of the HTTP/1.1 pool. Headers, messages and trailers are relayed
 * as they come, in both directions, with backpressure.
 */
import {
  type ClientHttp2Session,
  connect,
  constants,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type IncomingHttpHeaders,
} from 'node:http2';
import type { Logger } from 'pino';
import { dialUpstream, upstreamAddress } from './dial.js';

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

  constructor(private readonly log: Logger) {}

  private session(endpoint: string): ClientHttp2Session {
    let s = this.sessions.get(endpoint);
    if (s && !s.closed && !s.destroyed) return s;
    s = connect(upstreamAddress(endpoint).origin, { createConnection: () => dialUpstream(endpoint) });
    const session = s;
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
   */
  forward(
    req: Http2ServerRequest,
    res: Http2ServerResponse,
    endpoint: string,
    host: string,
    headers: string[],
    done: (status: number, err?: Error) => void,
  ): void {
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
    const finish = (err?: Error) => {
      if (finished) return;
      finished = true;
      done(status, err);
    };
    let session: ClientHttp2Session;
    try {
      session = this.session(endpoint);
    } catch (err) {
      return finish(err as Error);
    }
    // Open the stream only on a connected session: a replica that is gone then fails the call before any
    // byte of the request is read, so it can be retried elsewhere.
    if (session.connecting) {
      const onConnect = () => {
        session.off('error', onError);
        this.open(session, req, res, h2headers, (s) => (status = s), finish);
      };
      const onError = (err: Error) => {
        session.off('connect', onConnect);
        finish(err);
      };
      session.once('connect', onConnect);
      session.once('error', onError);
      return;
    }
    this.open(session, req, res, h2headers, (s) => (status = s), finish);
  }

  private open(
    session: ClientHttp2Session,
    req: Http2ServerRequest,
    res: Http2ServerResponse,
    h2headers: Record<string, string | string[]>,
    setStatus: (status: number) => void,
    finish: (err?: Error) => void,
  ): void {
    let status = 0;
    let stream: ReturnType<ClientHttp2Session['request']>;
    try {
      stream = session.request(h2headers);
    } catch (err) {
      return finish(err as Error);
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
  }

  close(): void {
    for (const s of this.sessions.values()) s.destroy();
    this.sessions.clear();
  }
}
