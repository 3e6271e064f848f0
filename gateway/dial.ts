/**
 * Where a replica endpoint is and how to open a connection to it. Endpoints are URLs:
 * - `http://host:port`: plain TCP upstreams (test fixtures, benchmarks, unsandboxed replicas);
 * - `unix:/abs/path.sock`: sandboxed replicas on this machine, which have no TCP address the gateway could
 *   reach (their network namespace has only loopback; the sandbox relays a Unix socket to the app's $PORT);
 * - `ingress:<nodeId>/<instanceId>/<slot>`: a replica on another machine, reached through that node's ingress
 *   (mutual TLS, see ingress-dialer.ts); the gateway registers the opener at start.
 * Every transport of the gateway (the HTTP pools, WebSocket tunnels, gRPC sessions, health checks) dials
 * through here, so a kind of endpoint is added in one place.
 */
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { buildConnector } from 'undici';

export interface UpstreamAddress {
  /** Origin for request URLs and the Host undici would send (`http://host:port`). */
  origin: string;
  /** Set for Unix-socket endpoints. */
  socketPath?: string;
  /** Set for endpoints opened by a registered opener (not a plain socket). */
  custom?: true;
}

const UNIX = 'unix:';
export const INGRESS = 'ingress:';

/** Opens a connection for a custom scheme; resolves once the connection carries the replica's bytes. */
export type Opener = (endpoint: string) => Promise<Duplex>;
const openers = new Map<string, Opener>();

export function registerOpener(scheme: string, open: Opener): void {
  openers.set(scheme, open);
}

export function unixEndpoint(path: string): string {
  return `${UNIX}${path}`;
}

export function ingressEndpoint(nodeId: string, instanceId: string, slot: number): string {
  return `${INGRESS}${nodeId}/${instanceId}/${slot}`;
}

export function parseIngressEndpoint(endpoint: string): { nodeId: string; instanceId: string; slot: number } | undefined {
  const m = /^ingress:([^/]+)\/([^/]+)\/(\d+)$/.exec(endpoint);
  return m ? { nodeId: m[1] as string, instanceId: m[2] as string, slot: Number(m[3]) } : undefined;
}

function schemeOf(endpoint: string): string {
  return endpoint.slice(0, endpoint.indexOf(':') + 1);
}

export function upstreamAddress(endpoint: string): UpstreamAddress {
  if (endpoint.startsWith(UNIX)) return { origin: 'http://localhost', socketPath: endpoint.slice(UNIX.length) };
  if (openers.has(schemeOf(endpoint))) return { origin: 'http://replica', custom: true };
  return { origin: new URL(endpoint).origin };
}

function plainSocket(endpoint: string): Socket {
  const addr = upstreamAddress(endpoint);
  if (addr.socketPath) return connect({ path: addr.socketPath });
  const url = new URL(addr.origin);
  return connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80) });
}

/** Opens a connection to an endpoint; resolves once it is connected (and, for the ingress, accepted). */
export function openUpstream(endpoint: string, timeoutMs = 2_000): Promise<Duplex> {
  const open = openers.get(schemeOf(endpoint));
  if (open) return open(endpoint);
  return new Promise((resolve, reject) => {
    const socket = plainSocket(endpoint);
    const timer = setTimeout(() => {
      const err = Object.assign(new Error(`connect to ${endpoint} timed out`), { code: 'UND_ERR_CONNECT_TIMEOUT' });
      socket.destroy(err);
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** The `connect` option of an undici dispatcher for this endpoint. */
export function undiciConnect(endpoint: string, timeoutMs = 2_000): buildConnector.BuildOptions | buildConnector.connector {
  const addr = upstreamAddress(endpoint);
  if (!addr.custom) return { timeout: timeoutMs, ...(addr.socketPath ? { socketPath: addr.socketPath } : {}) };
  return (_opts, callback) => {
    openUpstream(endpoint, timeoutMs).then(
      (socket) => callback(null, socket as Socket),
      (err: Error) => callback(err, null),
    );
  };
}
