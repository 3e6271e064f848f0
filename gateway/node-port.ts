/**
 * The client's side of a request on Node (transport.ts `ClientPort`): node:http's request and response (or
 * HTTP/2's compatibility API), and, for upgrades, the raw socket node:http hands over.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { BodyRateGuard } from './body-rate.js';
import { BodyMeter } from './body-rate.js';
import type { ClientPort } from './transport.js';

/** How long the rest of an unread request body is drained after the answer before the connection is cut. */
const DISCARD_LINGER_MS = 2_000;

export type ClientRequest = IncomingMessage | Http2ServerRequest;
export type ClientResponse = ServerResponse | Http2ServerResponse;

/** Answers a request with a short plain-text error (or cuts the response if it already started). */
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

/** A plain HTTP/1.1 or HTTP/2 request (gRPC calls included). */
export class NodeHttpPort implements ClientPort {
  readonly hasBody: boolean;
  private meter: BodyMeter | null = null;

  constructor(
    readonly req: ClientRequest,
    readonly res: ClientResponse,
    private readonly bodyRate: BodyRateGuard,
    private readonly notFoundHandler: (req: ClientRequest, res: ClientResponse) => void,
  ) {
    const cl = req.headers['content-length'];
    this.hasBody =
      cl !== undefined
        ? cl !== '0'
        : req.headers['transfer-encoding'] !== undefined ||
          (req.httpVersionMajor === 2 && !(req as Http2ServerRequest).stream?.endAfterHeaders);
  }

  onClose(cb: () => void): void {
    this.res.once('close', cb);
  }

  error(status: number, requestId: string, message: string, extra: Record<string, string> = {}, close = false): void {
    // A body we will not read keeps an HTTP/1 connection busy for as long as the client sends it: close it.
    const unreadBody = this.hasBody && !this.req.readableEnded && this.req.httpVersionMajor === 1;
    const closeIt = (close || unreadBody) && this.req.httpVersionMajor === 1;
    sendError(this.res, status, requestId, message, closeIt ? { ...extra, connection: 'close' } : extra);
  }

  notFound(_requestId: string, _host: string): void {
    this.notFoundHandler(this.req, this.res);
  }

  destroy(): void {
    this.res.destroy();
  }

  openBody(maxBytes: number, onTooSlow: () => void): BodyMeter {
    const meter = new BodyMeter(this.req, maxBytes);
    this.meter = meter;
    this.bodyRate.watch(meter, onTooSlow);
    this.res.once('finish', () => {
      if (!this.req.complete) this.discardRestOfBody(meter);
    });
    return meter;
  }

  /**
   * The answer is complete but the client is still sending a body nobody will read (the replica answered
   * early, e.g. 413). Left paused, that body would sit in front of the client's next request on the same
   * connection, which then never gets an answer. So the rest is read and thrown away — for a short while
   * only: a client that keeps sending loses the connection instead of keeping us busy.
   */
  private discardRestOfBody(meter: BodyMeter): void {
    const req = this.req;
    req.unpipe(meter);
    meter.destroy(); // also ends its watch by the body-rate guard
    req.resume();
    const timer = setTimeout(() => {
      if (!req.complete) req.socket?.destroy();
    }, DISCARD_LINGER_MS);
    timer.unref();
    req.once('end', () => clearTimeout(timer));
  }

  bodyConsumed(): boolean {
    return this.req.readableDidRead || (this.meter?.readableDidRead ?? false);
  }

  abandonBody(err: Error): void {
    this.meter?.destroy(err);
    // HTTP/1 closes the connection after the answer (Connection: close); HTTP/2 resets the stream once it is out.
    if (this.req.httpVersionMajor === 2) this.res.once('finish', () => (this.req as Http2ServerRequest).stream?.close());
  }
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  408: 'Request Timeout',
  413: 'Content Too Large',
  429: 'Too Many Requests',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/**
 * An upgrade request (WebSocket handshake): node:http has handed over the socket, so answers are written
 * raw, and every answer but a 101 closes the connection (nothing after a refused upgrade is parsed).
 */
export class NodeUpgradePort implements ClientPort {
  readonly hasBody = false;
  private sent = false;

  constructor(
    readonly req: IncomingMessage,
    readonly socket: Duplex,
    /** Bytes the client sent after the handshake, for the replica once the tunnel is open. */
    readonly head: Buffer,
  ) {
    socket.on('error', () => socket.destroy());
  }

  /** The response head has been written (by the tunnel transport). */
  markSent(): void {
    this.sent = true;
  }

  onClose(cb: () => void): void {
    this.socket.once('close', cb);
  }

  error(status: number, requestId: string, message: string, extra: Record<string, string> = {}): void {
    if (this.socket.destroyed || this.sent) return;
    this.sent = true;
    const body = `${message}\n`;
    let head = `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\n`;
    for (const [k, v] of Object.entries(extra)) if (k !== 'connection') head += `${k}: ${v}\r\n`;
    this.socket.end(`${head}connection: close\r\n\r\n${body}`);
  }

  notFound(requestId: string, host: string): void {
    this.error(404, requestId, host ? `no route for host ${host}` : 'request has no Host header');
  }

  destroy(): void {
    this.socket.destroy();
  }

  openBody(): null {
    return null;
  }

  bodyConsumed(): boolean {
    return false;
  }

  abandonBody(): void {}
}
