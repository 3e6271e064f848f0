/**
 * The engine's "decide retry" phase as pure functions: what a failed attempt means (`classify`) and what
 * to do about it (`decideRetry`), the same rules for plain HTTP, gRPC and WebSocket handshakes, on Node and
 * on Workers. No I/O, no clock: everything the decision depends on is in its input.
 */

/** What kind of request the attempt carried. */
export type RequestKind = 'http' | 'grpc' | 'upgrade';

/** Why an attempt failed. */
export type Failure =
  /** The replica never received the request: refused, unreachable, connect timeout, ingress said no. */
  | 'not-sent'
  /** The replica's end of the connection closed or reset before it answered. */
  | 'connection-lost'
  /** No response headers within the attempt's timeout. */
  | 'timeout'
  /** Anything else before the response started. */
  | 'error'
  /** The request body grew past the route's limit. */
  | 'body-too-large'
  /** The client went away (stream reset, socket closed). */
  | 'client-gone'
  /** The replica failed after the response started: it cannot be taken back. */
  | 'mid-response';

/** Error codes meaning the replica never received the request. */
export const NOT_SENT_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  // A replica's Unix socket gone with it (scaled away, restarted): nothing was sent.
  'ENOENT',
]);
/** Error codes meaning the replica's end of the connection went away (closed, reset) before it answered. */
export const CONNECTION_LOST_CODES: ReadonlySet<string> = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);
/** Methods whose requests may be sent twice (RFC 9110 §9.2.2). */
export const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Maps a transport error code to a failure (codes of client aborts, body limits and timeouts included). */
export function classify(code: string): Failure {
  if (code === 'ALLEGRA_CLIENT_GONE') return 'client-gone';
  if (code === 'ALLEGRA_BODY_TOO_LARGE') return 'body-too-large';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'ALLEGRA_TRY_TIMEOUT') return 'timeout';
  if (NOT_SENT_CODES.has(code)) return 'not-sent';
  if (CONNECTION_LOST_CODES.has(code)) return 'connection-lost';
  return 'error';
}

export interface RetryInput {
  kind: RequestKind;
  failure: Failure;
  method: string;
  /** The response had started when the attempt failed. */
  responseStarted: boolean;
  /** Bytes of the request body were read: the request cannot be sent again. */
  bodyConsumed: boolean;
  /** Attempts made so far, the failed one included. */
  attempts: number;
  /** Extra attempts the route allows. */
  retries: number;
  /**
   * Attempts the runtime allows one request in all (Workers: its subrequest limit); Infinity on Node.
   */
  maxAttempts: number;
  /** The request already retried once on the same replica after a lost connection. */
  retriedSameReplica: boolean;
  /**
   * The transport keeps connections to replicas open between requests (Node's pools), so a lost one may
   * just have been closed while idle. Workers' fetch keeps none the engine could see.
   */
  pooledConnections: boolean;
  /** The retry budget: this request already holds a retry slot, one is available, or none is. */
  budget: 'held' | 'available' | 'exhausted';
}

export type RetryDecision =
  /** Try again: on the same replica (a stale pooled connection) or on another; maybe taking a budget slot. */
  | { retry: true; sameReplica: boolean; takesBudget: boolean }
  /** Stop: answer with a status, cut the response that already started, or stop quietly (client gone). */
  | { retry: false; answer: 413 | 502 | 504 | 'cut' | 'client-gone' };

/**
 * Whether the request can be sent again at all: never once its body was read; a WebSocket handshake only
 * if it never reached a replica; gRPC calls (not known to be idempotent) only if they never reached a
 * replica or lost their connection before any answer; plain HTTP if it never reached a replica or its
 * method is idempotent.
 */
export function replayable(kind: RequestKind, failure: Failure, method: string, bodyConsumed: boolean): boolean {
  if (bodyConsumed) return false;
  if (failure === 'not-sent') return true;
  if (kind === 'upgrade') return false;
  if (kind === 'grpc') return failure === 'connection-lost';
  return IDEMPOTENT.has(method);
}

export function decideRetry(i: RetryInput): RetryDecision {
  if (i.failure === 'body-too-large') return { retry: false, answer: 413 };
  if (i.failure === 'client-gone') return { retry: false, answer: 'client-gone' };
  if (i.responseStarted || i.failure === 'mid-response') return { retry: false, answer: 'cut' };
  const fail = { retry: false, answer: i.failure === 'timeout' ? 504 : 502 } as const;
  if (!replayable(i.kind, i.failure, i.method, i.bodyConsumed)) return fail;
  if (i.attempts > i.retries || i.attempts >= i.maxAttempts) return fail;
  // The budget exists to stop retry storms against replicas that answer slowly or badly. A refused
  // connection never reached a replica, and a lost one means the replica process or its connection is
  // gone: those retries are bounded by what the dead replica held, so they do not need the budget (a
  // replica SIGKILLed under load failed more requests at once than the budget's floor allowed).
  const exempt = i.failure === 'not-sent' || i.failure === 'connection-lost';
  if (!exempt && i.budget === 'exhausted') return fail;
  // A lost pooled HTTP/1 connection usually means the replica closed it while idle: the replica itself is
  // fine and may be tried once more on a fresh connection. Anything else excludes it for this request.
  const sameReplica = i.pooledConnections && i.kind === 'http' && i.failure === 'connection-lost' && !i.retriedSameReplica;
  return { retry: true, sameReplica, takesBudget: !exempt && i.budget === 'available' };
}
