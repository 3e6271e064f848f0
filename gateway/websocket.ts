/**
 * Upgrade (WebSocket) proxying. The handshake is an HTTP request like any other: validated, admitted by
 * the route gate, sent to a replica picked with the route's sticky choice within the replica caps, under
 * the route's deadlines, and retried elsewhere only if the replica could not be reached. The handshake
 * goes out through node:http's client (over dial.ts), which parses the replica's answer: only a 101
 * turns the two sockets into a raw pipe. Any other answer is relayed as a response and the connection
 * closed, so nothing the client sends after a refused upgrade reaches a replica unparsed.
 *
 * An open tunnel depends on nothing but its two sockets, so route and replica changes never cut it; only
 * a drain (or either end) closes it. It no longer holds a route or replica slot once established (those
 * bound requests in flight); tunnels have their own gauge and byte counters.
 */
import { randomUUID } from 'node:crypto';
import { request as httpRequest, type IncomingMessage, type ClientRequest as UpstreamRequest } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { openUpstream } from './dial.js';
import type { Forwarder, ForwardTarget } from './forwarder.js';
import type { QueuedAdmission, Refusal } from './gates.js';
import { upstreamRequestHeaders } from './headers.js';
import type { GatewayMetrics } from './metrics.js';
import { type RequestPolicy, requestPolicy } from './policy.js';
import type { RoutingCore } from './routing.js';
import { selectReplica, stickyKeyOf } from './selector.js';
import { validateRequest } from './validate.js';

export interface UpgradeContext {
  core: RoutingCore;
  forwarder: Forwarder;
  metrics: GatewayMetrics;
  log: Logger;
  clientAddress: (socket: Duplex) => { ip: string; trusted: boolean };
  proto: string;
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  429: 'Too Many Requests',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};
/** Response headers that describe the replica's connection, not the response. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'trailer']);

function refuse(socket: Duplex, status: number, requestId: string, message: string): void {
  if (socket.destroyed) return;
  const body = `${message}\n`;
  const extra = status === 503 || status === 429 ? 'retry-after: 1\r\n' : '';
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\n${extra}connection: close\r\n\r\n${body}`,
  );
}

function statusLine(res: IncomingMessage): string {
  let head = `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}\r\n`;
  const raw = res.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (res.statusCode !== 101 && HOP_BY_HOP.has(name.toLowerCase())) continue;
    head += `${name}: ${raw[i + 1]}\r\n`;
  }
  return head;
}

export interface Tunnel {
  client: Duplex;
  upstream: Socket;
}

export class UpgradeProxy {
  /** Open tunnels (client and replica socket pairs), closed on drain. */
  readonly tunnels = new Set<Tunnel>();

  constructor(readonly ctx: UpgradeContext) {}

  handle(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const v = validateRequest(req);
    if (!v.ok) {
      this.ctx.metrics.count('-', 400);
      return refuse(socket, 400, randomUUID(), `bad request: ${v.message}`);
    }
    const { ip, trusted } = this.ctx.clientAddress(socket);
    const { headers, requestId } = upstreamRequestHeaders(req.rawHeaders, {
      clientIp: ip,
      proto: this.ctx.proto,
      host: v.host,
      authority: v.authority,
      trusted,
      mintId: randomUUID,
      upgrade: true,
    });
    const resolution = this.ctx.core.resolve(v.host);
    if (resolution.kind === 'no-route') {
      this.ctx.metrics.count('-', 404);
      return refuse(socket, 404, requestId, `no route for host ${v.host}`);
    }
    if (resolution.kind === 'no-replica') {
      this.ctx.metrics.count(resolution.route.instanceName, 503);
      return refuse(socket, 503, requestId, `no healthy replica for ${v.host}: ${resolution.reason}`);
    }
    const policy = requestPolicy(this.ctx.forwarder.policy, resolution.route.policy);
    new Handshake(this, req, socket, head, resolution, policy, headers, { host: v.host, client: ip, requestId, path: v.path }).begin();
  }

  open(tunnel: Tunnel): void {
    this.tunnels.add(tunnel);
    this.ctx.metrics.tunnelsOpen.inc();
    const { client, upstream } = tunnel;
    const up = this.ctx.metrics.tunnelBytes.labels('up');
    const down = this.ctx.metrics.tunnelBytes.labels('down');
    client.on('data', (d: Buffer) => up.inc(d.length));
    upstream.on('data', (d: Buffer) => down.inc(d.length));
    upstream.pipe(client);
    client.pipe(upstream);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      this.tunnels.delete(tunnel);
      this.ctx.metrics.tunnelsOpen.dec();
      upstream.destroy();
      client.destroy();
    };
    upstream.once('close', close);
    client.once('close', close);
    upstream.on('error', close);
  }

  closeAll(): void {
    for (const t of this.tunnels) {
      t.upstream.destroy();
      t.client.destroy();
    }
  }
}

/** One upgrade handshake through admit → select → attempt → respond (101: tunnel; else relay and close). */
class Handshake {
  private readonly tried: { set: Set<string> | null } = { set: null };
  private attempts = 0;
  private finished = false;
  private admitted = false;
  private queued: QueuedAdmission | null = null;
  private current: UpstreamRequest | null = null;
  private deadline: NodeJS.Timeout | null = null;
  private readonly fw: Forwarder;

  constructor(
    private readonly proxy: UpgradeProxy,
    private readonly req: IncomingMessage,
    private readonly socket: Duplex,
    private readonly head: Buffer,
    private readonly target: ForwardTarget,
    private readonly policy: RequestPolicy,
    private readonly headers: string[],
    private readonly id: { host: string; client: string; requestId: string; path: string },
  ) {
    this.fw = proxy.ctx.forwarder;
  }

  begin(): void {
    this.deadline = setTimeout(
      () => this.fail(504, `upstream timeout: ${this.id.host} did not accept the upgrade in time`),
      this.policy.tryTimeoutMs,
    );
    this.socket.once('close', () => {
      if (this.finished) return;
      this.proxy.ctx.metrics.clientAborts.labels(this.queued ? 'queued' : 'waiting').inc();
      this.end(499);
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
      this.proxy.ctx.metrics.refusals.labels(refusal).inc();
      return this.fail(refusal === 'client-share' ? 429 : 503, `route ${this.id.host} is at capacity; retry shortly`);
    }
    this.admitted = true;
    this.attempt();
  }

  private attempt(): void {
    const { balancer } = this.target;
    const sel = selectReplica(balancer, this.fw.load, this.fw.caps, this.id.client, stickyKeyOf(this.req.headers, this.policy), this.tried);
    const upstream = sel.upstream;
    if (!upstream) {
      if (this.attempts > 0) return this.fail(502, `bad gateway: could not reach a replica of ${this.id.host}`);
      return this.fail(503, sel.full ? `every replica of ${this.id.host} is at capacity` : `no healthy replica for ${this.id.host}`);
    }
    this.attempts++;
    balancer.onStart(upstream.id);
    this.fw.load.start(upstream.id, this.id.client);
    const t0 = performance.now();
    let settled = false;
    const settle = (ok: boolean | 'cancelled') => {
      if (settled) return;
      settled = true;
      this.fw.load.end(upstream.id, this.id.client);
      if (ok === 'cancelled') balancer.onCancel(upstream.id);
      else balancer.onEnd(upstream.id, performance.now() - t0, ok);
    };
    let connected = false;
    const up = httpRequest({
      method: this.req.method,
      path: this.id.path,
      headers: this.headers,
      setHost: false,
      // Node calls back with the socket when the connection is ready (for the ingress: accepted).
      createConnection: (_opts, oncreate) => {
        openUpstream(upstream.endpoint).then(
          (s) => {
            connected = true;
            oncreate(null, s);
          },
          (err: Error) => oncreate(err, undefined as unknown as Duplex),
        );
        return undefined;
      },
    });
    this.current = up;
    up.on('upgrade', (res, upSocket, upHead) => {
      settle(true);
      this.fw.reportOutcome(balancer, upstream.id, 'ok');
      if (this.finished) return upSocket.destroy();
      if (res.statusCode !== 101) return this.relay(res, upSocket);
      this.socket.write(`${statusLine(res)}\r\n`);
      if (upHead.length > 0) this.socket.write(upHead);
      if (this.head.length > 0) upSocket.write(this.head);
      this.end(101);
      this.proxy.open({ client: this.socket, upstream: upSocket });
    });
    up.on('response', (res) => {
      settle(true);
      this.fw.reportOutcome(balancer, upstream.id, (res.statusCode ?? 502) >= 500 ? 'error' : 'ok');
      if (this.finished) {
        res.destroy();
        return;
      }
      this.relay(res, null);
    });
    up.on('error', (err) => {
      if (this.finished) return settle('cancelled');
      settle(false);
      if (!connected) {
        // Never reached the replica: safe to try another.
        this.fw.reportOutcome(balancer, upstream.id, 'connect');
        (this.tried.set ??= new Set()).add(upstream.id);
        if (this.attempts <= this.policy.retries) return this.attempt();
      }
      this.proxy.ctx.log.warn(
        { requestId: this.id.requestId, host: this.id.host, upstream: upstream.endpoint, err: err.message },
        'upgrade failed',
      );
      this.fail(502, `bad gateway: could not reach a replica of ${this.id.host}`);
    });
    up.end();
  }

  /**
   * The replica answered without switching protocols: relay its response and close the connection. The
   * client socket left node:http's parser when the upgrade was requested, so it cannot go back to it.
   */
  private relay(res: IncomingMessage, upSocket: Duplex | null): void {
    upSocket?.destroy();
    this.end(res.statusCode ?? 502);
    if (this.socket.destroyed) {
      res.destroy();
      return;
    }
    this.socket.write(`${statusLine(res)}connection: close\r\n\r\n`);
    res.pipe(this.socket);
    res.once('error', () => this.socket.destroy());
  }

  private fail(status: number, message: string): void {
    if (this.finished) return;
    refuse(this.socket, status, this.id.requestId, message);
    this.end(status);
  }

  /** The handshake is over (tunnel, relayed answer, refusal or client gone): give back the route slot. */
  private end(status: number): void {
    if (this.finished) return;
    this.finished = true;
    if (this.deadline) clearTimeout(this.deadline);
    this.queued?.cancel();
    this.queued = null;
    if (status !== 101 && this.current && !this.current.destroyed && status >= 499) this.current.destroy();
    this.proxy.ctx.metrics.count(this.target.route.instanceName, status);
    if (this.admitted) this.fw.gate.release(this.target.route.instanceId, this.id.client);
    this.fw.done();
  }
}
