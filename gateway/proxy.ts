/**
 * The Node fast path: proxies a request that has a route straight from node:http to an undici pool of
 * the chosen replica, streaming both ways. Hono's Request/Response conversion would halve throughput on
 * Node (see docs/ARCHITECTURE.md), so proxied traffic never goes through it.
 *
 * A request is retried on another replica only when it failed before any byte of it was sent upstream
 * (connection refused or reset during connect), which is safe for every method.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { Pool } from 'undici';
import type { Balancer } from '../router/balancer.js';
import { clientResponseHeaders, upstreamRequestHeaders } from './headers.js';
import type { GatewayMetrics } from './metrics.js';
import type { Upstream } from './routing.js';

export interface ProxyOptions {
  /** Time to wait for an upstream's response headers before answering 504. */
  headersTimeoutMs?: number;
  /** Extra attempts on other replicas for requests that never reached an upstream. */
  maxRetries?: number;
  /** How long a replica that refused a connection is skipped. */
  ejectMs?: number;
  connectionsPerReplica?: number;
}

const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'EPIPE',
]);

export function sendError(
  res: ServerResponse,
  status: number,
  requestId: string,
  message: string,
  extra: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `${message}\n`;
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'x-request-id': requestId,
    'cache-control': 'no-store',
    ...extra,
  });
  res.end(body);
}

export class UpstreamProxy {
  private readonly pools = new Map<string, Pool>();
  private readonly headersTimeoutMs: number;
  private readonly maxRetries: number;
  private readonly ejectMs: number;
  private readonly connections: number;

  constructor(
    private readonly metrics: GatewayMetrics,
    private readonly log: Logger,
    opts: ProxyOptions = {},
  ) {
    this.headersTimeoutMs = opts.headersTimeoutMs ?? 30_000;
    this.maxRetries = opts.maxRetries ?? 2;
    this.ejectMs = opts.ejectMs ?? 2_000;
    this.connections = opts.connectionsPerReplica ?? 256;
  }

  private pool(endpoint: string): Pool {
    let pool = this.pools.get(endpoint);
    if (!pool) {
      pool = new Pool(endpoint, {
        connections: this.connections,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        headersTimeout: this.headersTimeoutMs,
        bodyTimeout: 0,
        connect: { timeout: 2_000 },
      });
      this.pools.set(endpoint, pool);
    }
    return pool;
  }

  /** Closes the pool of a replica that left, after its in-flight requests finish. */
  release(endpoint: string): void {
    const pool = this.pools.get(endpoint);
    if (!pool) return;
    this.pools.delete(endpoint);
    void pool.close().catch(() => {});
  }

  forward(req: IncomingMessage, res: ServerResponse, host: string, balancer: Balancer<Upstream>, proto: string): void {
    const started = performance.now();
    const { headers, requestId } = upstreamRequestHeaders(req.rawHeaders, {
      clientIp: req.socket.remoteAddress ?? '',
      proto,
      host,
      mintId: randomUUID,
    });
    const method = req.method ?? 'GET';
    const hasBody =
      req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
    let tried: Set<string> | undefined;
    this.metrics.inFlight.inc();

    const finish = (status: number) => {
      this.metrics.inFlight.dec();
      this.metrics.count(status);
      this.metrics.duration.observe((performance.now() - started) / 1000);
    };

    const attempt = (upstream: Upstream): void => {
      balancer.onStart(upstream.id);
      const t0 = performance.now();
      let status = 0;
      this.pool(upstream.endpoint).stream(
        { path: req.url ?? '/', method, headers, body: hasBody ? req : null, opaque: upstream },
        ({ statusCode, headers: upstreamHeaders }) => {
          status = statusCode;
          res.writeHead(statusCode, clientResponseHeaders(upstreamHeaders as Record<string, string | string[] | undefined>, requestId));
          return res;
        },
        (err) => {
          balancer.onEnd(upstream.id, performance.now() - t0, !err && status < 500);
          if (!err) return finish(status);
          const code = (err as NodeJS.ErrnoException).code ?? '';
          if (status !== 0 || res.headersSent) {
            // The response had started: all we can do is cut it so the client sees it incomplete.
            this.metrics.upstreamErrors.labels('mid-response').inc();
            res.destroy();
            return finish(status);
          }
          if (res.destroyed || req.destroyed) return finish(499);
          const beforeSend = CONNECT_ERRORS.has(code) && !req.readableDidRead;
          if (beforeSend) {
            balancer.eject(upstream.id, this.ejectMs);
            this.metrics.ejections.inc();
            this.metrics.upstreamErrors.labels('connect').inc();
            (tried ??= new Set()).add(upstream.id);
            const next = tried.size <= this.maxRetries ? balancer.pick(tried) : undefined;
            if (next) {
              this.metrics.retries.inc();
              return attempt(next);
            }
          }
          const timeout = code === 'UND_ERR_HEADERS_TIMEOUT';
          this.metrics.upstreamErrors.labels(timeout ? 'timeout' : 'error').inc();
          this.log.warn({ requestId, host, upstream: upstream.endpoint, code, err: (err as Error).message }, 'upstream request failed');
          const st = timeout ? 504 : 502;
          sendError(
            res,
            st,
            requestId,
            timeout ? `upstream timeout: ${host} did not answer in time` : `bad gateway: upstream of ${host} failed (${code || 'error'})`,
          );
          finish(st);
        },
      );
    };

    const first = balancer.pick();
    if (!first) {
      sendError(res, 503, requestId, `no healthy replica for ${host}`, { 'retry-after': '1' });
      finish(503);
      return;
    }
    attempt(first);
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.allSettled(pools.map((p) => p.destroy()));
  }
}
