/**
 * The Node HTTP transport: an undici `Pool` per replica (keep-alive, HTTP/1.1 to the replica over dial.ts)
 * and a dispatch handler of our own that streams the response to node:http (or HTTP/2's compatibility API)
 * with backpressure both ways. Hono's Request/Response conversion would halve throughput on Node
 * (docs/ARCHITECTURE.md), so proxied traffic never goes through it.
 */
import type { ServerResponse } from 'node:http';
import { type Dispatcher, Pool } from 'undici';
import { BodyTooLarge } from './body-rate.js';
import { undiciConnect, upstreamAddress } from './dial.js';
import type { NodeHttpPort } from './node-port.js';
import { classify } from './retry.js';
import { type AttemptHandle, type AttemptRequest, type AttemptSink, ClientGone, type Transport } from './transport.js';
import type { Upstream } from './upstream.js';

export interface UndiciTransportOptions {
  connectionsPerReplica?: number;
  /** Default time allowed for response headers (each attempt passes its own). */
  headersTimeoutMs: number;
}

export class UndiciTransport implements Transport<NodeHttpPort> {
  readonly name = 'undici';
  private readonly pools = new Map<string, Pool>();

  constructor(private readonly opts: UndiciTransportOptions) {}

  pool(endpoint: string): Pool {
    let pool = this.pools.get(endpoint);
    if (!pool) {
      pool = new Pool(upstreamAddress(endpoint).origin, {
        connections: this.opts.connectionsPerReplica ?? 256,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        headersTimeout: this.opts.headersTimeoutMs,
        bodyTimeout: 0,
        connect: undiciConnect(endpoint),
      });
      this.pools.set(endpoint, pool);
    }
    return pool;
  }

  send(port: NodeHttpPort, req: AttemptRequest, upstream: Upstream, sink: AttemptSink): AttemptHandle {
    const handler = new UndiciAttempt(port, sink);
    this.pool(upstream.endpoint).dispatch(
      {
        path: req.path,
        method: req.method as Dispatcher.HttpMethod,
        headers: req.headers,
        body: req.body as Dispatcher.DispatchOptions['body'],
        headersTimeout: req.tryTimeoutMs,
        bodyTimeout: 0,
      },
      handler,
    );
    return handler;
  }

  /** Closes the pool of a replica that left, once its in-flight requests are done. */
  release(endpoint: string): void {
    const pool = this.pools.get(endpoint);
    if (!pool) return;
    this.pools.delete(endpoint);
    void pool.close().catch(() => {});
  }

  /**
   * Cuts every connection to the endpoints `matches` selects (their node stopped answering): requests in
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
  }

  /** Connections open to each replica endpoint (undici pool stats), for metrics. */
  connections(): Array<{ endpoint: string; connected: number; queued: number }> {
    return [...this.pools].map(([endpoint, p]) => ({ endpoint, connected: p.stats.connected, queued: p.stats.queued }));
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.allSettled(pools.map((p) => p.destroy()));
  }
}

/** One try on one replica: the undici dispatch handler. */
class UndiciAttempt implements Dispatcher.DispatchHandler, AttemptHandle {
  private controller: Dispatcher.DispatchController | null = null;
  /** Aborted before undici handed us a controller (the request was still queued in the pool). */
  private pendingAbort: Error | null = null;
  /** The engine stopped listening (deadline, client gone): nothing more is reported. */
  private stopped = false;
  private onDrain: (() => void) | null = null;

  constructor(
    private readonly port: NodeHttpPort,
    private readonly sink: AttemptSink,
  ) {}

  abort(reason: Error): void {
    this.stopped = true;
    if (!this.controller) {
      // Still waiting for a pooled connection: dropped when undici gets to it (onRequestStart), never sent.
      this.pendingAbort = reason;
      return;
    }
    // A client that left: cancelled in a batch (cancelling closes the replica connection, and a connection
    // closing with hundreds of streams would otherwise do all of that in one go while other requests wait).
    if (reason instanceof ClientGone) cancelLater(this.controller, reason);
    else this.controller.abort(reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // Nothing of this request has been written yet. Aborting through the controller would destroy the
    // pooled connection it was about to use (undici cannot cancel otherwise); throwing here makes undici
    // drop the request before writing it and keep the connection for the next one. Under a rapid-reset
    // flood that is the difference between reusing connections and opening hundreds per replica.
    if (this.pendingAbort) throw this.pendingAbort;
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (statusCode < 200) return; // 1xx: the gateway already handled Expect itself
    const out = this.stopped ? null : this.sink.head(statusCode, headers);
    if (out === null) {
      this.stopped = true;
      controller.abort(new Error('request already answered'));
      return;
    }
    (this.port.res as ServerResponse).writeHead(statusCode, out);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.stopped) {
      controller.abort(new ClientGone('client closed the connection'));
      return;
    }
    if (!(this.port.res as ServerResponse).write(chunk)) {
      controller.pause();
      if (!this.onDrain) this.onDrain = () => controller.resume();
      this.port.res.once('drain', this.onDrain);
    }
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    if (this.stopped) return;
    const res = this.port.res;
    let hasTrailers = false;
    for (const _ in trailers) {
      hasTrailers = true;
      break;
    }
    if (hasTrailers) res.addTrailers(trailers as Record<string, string>);
    res.end();
    this.sink.end();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.stopped) return;
    this.stopped = true;
    this.sink.fail(err, err instanceof BodyTooLarge ? 'body-too-large' : classify((err as NodeJS.ErrnoException).code ?? ''));
  }
}

const pendingCancels: Array<[Dispatcher.DispatchController, Error]> = [];

function cancelLater(controller: Dispatcher.DispatchController, reason: Error): void {
  if (pendingCancels.push([controller, reason]) === 1) setImmediate(runCancels);
}

function runCancels(): void {
  for (const [controller, reason] of pendingCancels.splice(0, 32)) controller.abort(reason);
  if (pendingCancels.length > 0) setImmediate(runCancels);
}
