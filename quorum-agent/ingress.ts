/**
 * The node ingress: how traffic from other machines reaches this node's replicas. Replicas are private to
 * their machine (a sandboxed replica has no network interface but loopback; see the sandbox); gateways
 * connect here, on the agent's advertised address, with mutual TLS pinned to keys the registry holds: the
 * node accepts only keys of live gateway records, so knowing the address is not enough to reach a replica
 * or to pose as a gateway. Each connection, once it names a replica this node runs, becomes a raw pipe to
 * that replica: HTTP/1.1, HTTP/2 (gRPC) and WebSocket pass through untouched, and the gateway pools the
 * connections.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { type IdentityCert, peerKeyHex } from '../protocol/identity-cert.js';
import { LINE_DEADLINE_MS, LineReader, parseRequest } from '../protocol/ingress-wire.js';

export interface IngressOptions {
  host: string;
  port: number;
  cert: IdentityCert;
  /** Whether a TLS client key belongs to a live gateway of the network. */
  isGateway: (publicKeyHex: string) => boolean;
  /** Where the replica of `instanceId` in `slot` running here listens (`unix:` or `http:` endpoint). */
  replicaEndpoint: (instanceId: string, slot: number) => string | undefined;
  log: Logger;
  /** Most connections held at once (each is a pooled gateway connection). */
  maxConnections?: number;
}

function connectEndpoint(endpoint: string): Socket {
  if (endpoint.startsWith('unix:')) return netConnect({ path: endpoint.slice('unix:'.length) });
  const url = new URL(endpoint);
  return netConnect({ host: url.hostname, port: Number(url.port) });
}

export class NodeIngress {
  private server: Server | null = null;
  private readonly open = new Set<TLSSocket>();

  constructor(private readonly opts: IngressOptions) {}

  async start(): Promise<number> {
    const server = createServer({
      cert: this.opts.cert.certPem,
      key: this.opts.cert.keyPem,
      minVersion: 'TLSv1.3',
      requestCert: true,
      // Peers are pinned by key below, not by a CA.
      rejectUnauthorized: false,
    });
    server.maxConnections = this.opts.maxConnections ?? 4_096;
    server.on('secureConnection', (socket) => this.accept(socket));
    server.on('tlsClientError', () => {});
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', reject);
        resolve((server.address() as { port: number }).port);
      });
    });
  }

  private accept(socket: TLSSocket): void {
    socket.on('error', () => socket.destroy());
    this.open.add(socket);
    socket.once('close', () => this.open.delete(socket));
    const key = peerKeyHex(socket);
    if (!key || !this.opts.isGateway(key)) {
      this.opts.log.warn({ peer: socket.remoteAddress, key: key?.slice(0, 12) }, 'ingress: refused a client that is not a gateway');
      socket.end('ERR not a gateway of this network\n');
      socket.setTimeout(LINE_DEADLINE_MS, () => socket.destroy());
      return;
    }
    const reader = new LineReader();
    const deadline = setTimeout(() => socket.destroy(), LINE_DEADLINE_MS);
    const onData = (chunk: Buffer) => {
      let got: ReturnType<LineReader['push']>;
      try {
        got = reader.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      if (!got) return;
      const req = parseRequest(got.line);
      if (!req) {
        socket.end('ERR malformed request\n');
        return;
      }
      if (req.op === 'ping') {
        socket.write('PONG\n');
        // Pings repeat on one connection; whatever followed this one is the next line.
        if (got.rest.length > 0) onData(got.rest);
        deadline.refresh();
        return;
      }
      clearTimeout(deadline);
      socket.off('data', onData);
      this.bridge(socket, req.instanceId, req.slot, got.rest);
    };
    socket.on('data', onData);
  }

  /** Connects the gateway's socket to a local replica and pipes them together. */
  private bridge(socket: TLSSocket, instanceId: string, slot: number, head: Buffer): void {
    const endpoint = this.opts.replicaEndpoint(instanceId, slot);
    if (!endpoint) {
      socket.end(`ERR no replica ${instanceId}.${slot} runs on this node\n`);
      return;
    }
    socket.pause();
    const upstream = connectEndpoint(endpoint);
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      socket.write('OK\n');
      if (head.length > 0) upstream.write(head);
      socket.pipe(upstream);
      upstream.pipe(socket);
      socket.resume();
    });
    upstream.once('error', () => {
      if (connected) socket.destroy();
      else socket.end(`ERR replica ${instanceId}.${slot} is not accepting connections\n`);
    });
    const close = () => {
      upstream.destroy();
      socket.destroy();
    };
    upstream.once('close', close);
    socket.once('close', close);
  }

  async stop(): Promise<void> {
    for (const s of this.open) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
