/**
 * Upgrade (WebSocket) proxying: the handshake is forwarded to a replica over a fresh TCP connection and,
 * once sent, the two sockets are piped together. Such a tunnel depends on nothing but its two sockets, so
 * route and replica changes never cut it; only a drain (or either end) closes it.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { normalizeHost } from '../protocol/keys.js';
import { dialUpstream } from './dial.js';
import type { Forwarder } from './forwarder.js';
import { hasDuplicateHost, upstreamRequestHeaders } from './headers.js';
import type { GatewayMetrics } from './metrics.js';
import type { RoutingCore, Upstream } from './routing.js';

export interface UpgradeContext {
  core: RoutingCore;
  forwarder: Forwarder;
  metrics: GatewayMetrics;
  log: Logger;
  clientAddress: (socket: Duplex) => { ip: string; trusted: boolean };
  proto: string;
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 502: 'Bad Gateway', 503: 'Service Unavailable' };

function refuse(socket: Duplex, status: number, requestId: string, message: string): void {
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n${body}`,
  );
}

export class UpgradeProxy {
  /** Open tunnels (client and replica socket pairs), closed on drain. */
  readonly tunnels = new Set<{ client: Duplex; upstream: Socket }>();

  constructor(private readonly ctx: UpgradeContext) {}

  handle(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const host = normalizeHost(req.headers.host);
    const { ip, trusted } = this.ctx.clientAddress(socket);
    const { headers, requestId } = upstreamRequestHeaders(req.rawHeaders, {
      clientIp: ip,
      proto: this.ctx.proto,
      host,
      trusted,
      mintId: randomUUID,
      upgrade: true,
    });
    socket.on('error', () => socket.destroy());
    if (hasDuplicateHost(req.rawHeaders)) return refuse(socket, 400, requestId, 'bad request: more than one Host header');
    const resolution = this.ctx.core.resolve(host);
    if (resolution.kind === 'no-route') return refuse(socket, 404, requestId, `no route for host ${host}`);
    if (resolution.kind === 'no-replica') return refuse(socket, 503, requestId, `no healthy replica for ${host}: ${resolution.reason}`);
    const { balancer } = resolution;
    let head1 = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < headers.length; i += 2) head1 += `${headers[i]}: ${headers[i + 1]}\r\n`;
    const handshake = `${head1}\r\n`;
    const tried = new Set<string>();

    const attempt = (upstream: Upstream) => {
      const t0 = performance.now();
      const up = dialUpstream(upstream.endpoint);
      balancer.onStart(upstream.id);
      let connected = false;
      up.once('connect', () => {
        connected = true;
        balancer.onEnd(upstream.id, performance.now() - t0, true);
        up.write(handshake);
        if (head.length > 0) up.write(head);
        const tunnel = { client: socket, upstream: up };
        this.tunnels.add(tunnel);
        this.ctx.metrics.count(resolution.route.instanceName, 101);
        up.pipe(socket);
        socket.pipe(up);
        const close = () => {
          this.tunnels.delete(tunnel);
          up.destroy();
          socket.destroy();
        };
        up.once('close', close);
        socket.once('close', close);
      });
      up.once('error', (err) => {
        if (connected) return;
        balancer.onEnd(upstream.id, performance.now() - t0, false);
        this.ctx.forwarder.reportOutcome(balancer, upstream.id, 'connect');
        tried.add(upstream.id);
        const next = tried.size <= this.ctx.forwarder.policy.retries ? balancer.pick(tried) : undefined;
        if (next && !socket.destroyed) return attempt(next);
        this.ctx.log.warn({ requestId, host, upstream: upstream.endpoint, err: err.message }, 'upgrade failed');
        refuse(socket, 502, requestId, `bad gateway: could not reach a replica of ${host}`);
      });
    };
    const first = balancer.pick();
    if (!first) return refuse(socket, 503, requestId, `no healthy replica for ${host}`);
    attempt(first);
  }

  closeAll(): void {
    for (const t of this.tunnels) {
      t.upstream.destroy();
      t.client.destroy();
    }
    this.tunnels.clear();
  }
}
