/**
 * The Node tunnel transport (WebSocket and other upgrades). The handshake goes out through node:http's
 * client over dial.ts, which parses the replica's answer: only a 101 turns the two sockets into a raw pipe.
 * Any other answer is relayed as a response and the connection closed, so nothing the client sends after a
 * refused upgrade reaches a replica unparsed.
 *
 * An open tunnel depends on nothing but its two sockets, so route and replica changes never cut it; only a
 * drain (or either end) closes it. It holds no route or replica slot once established (those bound
 * requests in flight); tunnels have their own gauge and byte counters.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { openUpstream } from './dial.js';
import type { GatewayMetrics } from './metrics.js';
import type { NodeUpgradePort } from './node-port.js';
import type { AttemptHandle, AttemptRequest, AttemptSink, Transport } from './transport.js';
import type { Upstream } from './upstream.js';

export interface Tunnel {
  client: Duplex;
  upstream: Socket;
}

function statusLine(status: number, message: string | undefined, headers: Record<string, string | string[]>): string {
  let head = `HTTP/1.1 ${status} ${message ?? ''}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (Array.isArray(value)) for (const v of value) head += `${name}: ${v}\r\n`;
    else head += `${name}: ${value}\r\n`;
  }
  return head;
}

export class TunnelTransport implements Transport<NodeUpgradePort> {
  readonly name = 'tunnel';
  /** Open tunnels (client and replica socket pairs), closed on drain. */
  readonly tunnels = new Set<Tunnel>();

  constructor(private readonly metrics: GatewayMetrics) {}

  send(port: NodeUpgradePort, req: AttemptRequest, upstream: Upstream, sink: AttemptSink): AttemptHandle {
    let stopped = false;
    let connected = false;
    const fail = (err: Error) => {
      if (stopped) return;
      stopped = true;
      // Never reached the replica: safe to try another. Connected, the handshake itself failed.
      sink.fail(err, connected ? 'error' : 'not-sent');
    };
    const up = httpRequest({
      method: req.method,
      path: req.path,
      headers: req.headers,
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
    const answer = (res: IncomingMessage, upSocket: Duplex | null, upHead: Buffer | null) => {
      if (stopped) {
        upSocket?.destroy();
        res.destroy();
        return;
      }
      const status = res.statusCode ?? 502;
      const out = sink.head(status, res.headers);
      stopped = true;
      if (out === null || port.socket.destroyed) {
        upSocket?.destroy();
        res.destroy();
        return;
      }
      port.markSent();
      if (status === 101 && upSocket) {
        port.socket.write(`${statusLine(status, res.statusMessage, out)}\r\n`);
        if (upHead && upHead.length > 0) port.socket.write(upHead);
        if (port.head.length > 0) upSocket.write(port.head);
        sink.end();
        this.open({ client: port.socket, upstream: upSocket as Socket });
        return;
      }
      // The replica answered without switching protocols: relay its response and close the connection.
      // The client socket left node:http's parser when the upgrade was requested; it cannot go back to it.
      upSocket?.destroy();
      port.socket.write(`${statusLine(status, res.statusMessage, out)}connection: close\r\n\r\n`);
      res.pipe(port.socket);
      res.once('error', () => port.socket.destroy());
      sink.end();
    };
    up.on('upgrade', (res, upSocket, upHead) => answer(res, upSocket, upHead));
    up.on('response', (res) => answer(res, null, null));
    up.on('error', fail);
    up.end();
    return {
      abort: () => {
        stopped = true;
        if (!up.destroyed) up.destroy();
      },
    };
  }

  private open(tunnel: Tunnel): void {
    this.tunnels.add(tunnel);
    this.metrics.tunnelsOpen.inc();
    const { client, upstream } = tunnel;
    const up = this.metrics.tunnelBytes.labels('up');
    const down = this.metrics.tunnelBytes.labels('down');
    client.on('data', (d: Buffer) => up.inc(d.length));
    upstream.on('data', (d: Buffer) => down.inc(d.length));
    upstream.pipe(client);
    client.pipe(upstream);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      this.tunnels.delete(tunnel);
      this.metrics.tunnelsOpen.dec();
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
