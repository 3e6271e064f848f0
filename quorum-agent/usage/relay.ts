/**
 * The counting relay in front of one replica: the replica's published endpoint is this relay's Unix
 * socket, which forwards every connection to the replica's own endpoint and counts bytes both ways and the
 * requests on the way in (requests.ts). Gateways on this machine and the node ingress both reach replicas
 * through it, so what is counted is what this node served. Health probes go to the replica directly and
 * are not counted.
 */
import { chmodSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { RequestCounter } from './requests.js';

export interface Traffic {
  requests: number;
  bytesIn: number;
  bytesOut: number;
}

/** Forwards `from` to `to`, pausing `from` while `to` is backed up; counts what passes. */
function forward(from: Socket, to: Socket, count: (chunk: Buffer) => void): void {
  from.on('data', (chunk: Buffer) => {
    count(chunk);
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.on('end', () => to.end());
}

function dial(endpoint: string): Socket {
  if (endpoint.startsWith('unix:')) return connect(endpoint.slice('unix:'.length));
  const url = new URL(endpoint);
  return connect(Number(url.port), url.hostname);
}

export class CountingRelay {
  readonly traffic: Traffic = { requests: 0, bytesIn: 0, bytesOut: 0 };
  /**
   * Requests that reached the replica and have had no byte of answer yet, over every connection: the
   * replica's own load figure for the autoscaler. A connection's requests count until the replica's first
   * byte after them (a streaming answer counts as answered), so it never drifts: each connection's share
   * returns to zero when it answers or closes.
   */
  awaiting = 0;
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(
    readonly socketPath: string,
    private readonly target: string,
  ) {}

  get endpoint(): string {
    return `unix:${this.socketPath}`;
  }

  async start(): Promise<this> {
    rmSync(this.socketPath, { force: true });
    const server = createServer((client) => {
      const upstream = dial(this.target);
      const counter = new RequestCounter();
      let counted = 0;
      let pending = 0;
      const answered = () => {
        this.awaiting -= pending;
        pending = 0;
      };
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
        s.on('close', () => {
          answered();
          this.sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      forward(client, upstream, (chunk) => {
        this.traffic.bytesIn += chunk.length;
        counter.push(chunk);
        const fresh = counter.count - counted;
        this.traffic.requests += fresh;
        pending += fresh;
        this.awaiting += fresh;
        counted = counter.count;
      });
      forward(upstream, client, (chunk) => {
        this.traffic.bytesOut += chunk.length;
        answered();
      });
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => resolve());
    });
    // Gateways may run as another user of this machine, like the replica's own socket (0666 in a 0711 dir).
    chmodSync(this.socketPath, 0o666);
    return this;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    rmSync(this.socketPath, { force: true });
  }
}
