/**
 * What the engine needs of a runtime, as interfaces: the client's side of one request (`ClientPort`) and
 * the way attempts reach a replica (`Transport`). Node implements them over node:http/http2 and undici,
 * HTTP/2 client sessions and raw tunnels (node-port.ts, transport-*.ts); Workers over Request/Response and
 * fetch (edge/). Runtime-neutral: no Node or Workers types appear here.
 */
import type { Failure } from './retry.js';
import type { Upstream } from './upstream.js';

/** The parts of a client request the engine reads (node:http's IncomingMessage has exactly these). */
export interface RequestView {
  method?: string;
  /** The request target as received (origin-form or absolute-form). */
  url?: string;
  httpVersionMajor: number;
  rawHeaders: string[];
  headers: Record<string, string | string[] | undefined>;
}

/** The client's side of one request. */
export interface ClientPort {
  readonly req: RequestView;
  /** Whether the request carries a body (Content-Length > 0, chunked, or an HTTP/2 stream left open). */
  readonly hasBody: boolean;
  /** Calls `cb` once if the client goes away before the response is complete. */
  onClose(cb: () => void): void;
  /** A short answer: status, one line, x-request-id. `close`: close the connection after it (HTTP/1). */
  error(status: number, requestId: string, message: string, extra?: Record<string, string>, close?: boolean): void;
  /** The answer for a host no route matches (the Hono fallback app on both runtimes). */
  notFound(requestId: string, host: string): void;
  /** Cuts a response that started (the replica failed mid-response). */
  destroy(): void;
  /**
   * The request body as the transport sends it, metered: bodies without Content-Length fail past `maxBytes`
   * (BodyTooLarge); on Node, `onTooSlow` is called if it arrives slower than the minimum rate. Null when the
   * request has no body.
   */
  openBody(maxBytes: number, onTooSlow: () => void): unknown;
  /** Bytes of the body were read: the request cannot be sent again. */
  bodyConsumed(): boolean;
  /** The body will not be read any more (refused, too slow): release it (HTTP/2 resets the stream). */
  abandonBody(err: Error): void;
}

/** One attempt as a transport sends it. */
export interface AttemptRequest {
  method: string;
  /** Origin-form target. */
  path: string;
  /** Host sent upstream (the validated authority). */
  authority: string;
  /** Flat [name, value, …] list of headers for the replica (forwarding headers set, hop-by-hop removed). */
  headers: string[];
  /** What `ClientPort.openBody` returned. */
  body: unknown;
  /** Time allowed for the response head (then the attempt fails with 'timeout'). */
  tryTimeoutMs: number;
  /** The client's request id, for logs. */
  requestId: string;
}

/** How a transport reports an attempt to the engine. Exactly one of `end` and `fail` is called, once. */
export interface AttemptSink {
  /**
   * The replica's response head (pseudo-headers removed). Returns the headers to send to the client, or
   * null when the request is already answered (deadline, client gone): the transport then drops the
   * response. For an upgrade, the transport tunnels after a 101 and relays any other answer.
   */
  head(status: number, headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> | null;
  /** The response was relayed to its end (or, for an upgrade, the tunnel is open). */
  end(): void;
  /** The attempt failed: before the head (retry may follow) or after it (the response is cut). */
  fail(err: Error, failure: Failure): void;
}

/** A running attempt. */
export interface AttemptHandle {
  /** Stops the attempt (deadline, client gone); the transport does not report it any more. */
  abort(reason: Error): void;
}

export interface Transport<P extends ClientPort = ClientPort> {
  readonly name: string;
  send(port: P, req: AttemptRequest, upstream: Upstream, sink: AttemptSink): AttemptHandle;
}

/** Thrown by a transport or port when the client went away. */
export class ClientGone extends Error {
  readonly code = 'ALLEGRA_CLIENT_GONE';
}
