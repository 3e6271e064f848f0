/**
 * Where a replica endpoint is and how to open a connection to it. Endpoints are URLs: `http://host:port`
 * for plain TCP upstreams (test fixtures, benchmarks) and `unix:/abs/path.sock` for sandboxed replicas on
 * this machine, which have no TCP address the gateway could reach (their network namespace has only
 * loopback; the sandbox relays a Unix socket to the app's $PORT). Every transport of the gateway (the
 * HTTP pools, WebSocket tunnels, gRPC sessions, health checks) dials through here, so a new kind of
 * endpoint (the node ingress across machines) is added in one place.
 */
import { connect, type Socket } from 'node:net';

export interface UpstreamAddress {
  /** Origin for request URLs and the Host undici would send (`http://host:port`). */
  origin: string;
  /** Set for Unix-socket endpoints. */
  socketPath?: string;
}

const UNIX = 'unix:';

export function unixEndpoint(path: string): string {
  return `${UNIX}${path}`;
}

export function upstreamAddress(endpoint: string): UpstreamAddress {
  if (endpoint.startsWith(UNIX)) return { origin: 'http://localhost', socketPath: endpoint.slice(UNIX.length) };
  return { origin: new URL(endpoint).origin };
}

/** Opens a raw connection to an endpoint; emits `connect` like any net.Socket. */
export function dialUpstream(endpoint: string): Socket {
  const addr = upstreamAddress(endpoint);
  if (addr.socketPath) return connect({ path: addr.socketPath });
  const url = new URL(addr.origin);
  return connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80) });
}
