/**
 * The gateway's side of the node ingress (quorum-agent/ingress.ts): opens a mutual-TLS connection to a
 * node's advertised ingress address, checks that the node's certificate carries the key of its registry
 * record, names the replica and waits for `OK` — only then is the connection handed to the HTTP pool, a
 * WebSocket tunnel or an HTTP/2 session, so a replica that is gone is a connection failure (retryable),
 * never a half-sent request. A node that does not answer its pings is reported down.
 */
import { connect, type TLSSocket } from 'node:tls';
import { type IdentityCert, peerKeyHex } from '../protocol/identity-cert.js';
import { encodeRequest, LINE_DEADLINE_MS, LineReader } from '../protocol/ingress-wire.js';

export interface IngressNode {
  /** `host:port` of the node's ingress. */
  ingress: string;
  /** Hex Ed25519 key the node's certificate must carry. */
  publicKey: string;
}

export class IngressError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

function splitHostPort(address: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!m) throw new IngressError(`bad ingress address ${address}`, 'EINVAL');
  return { host: m[1] as string, port: Number(m[2]) };
}

export class IngressDialer {
  constructor(
    private readonly cert: IdentityCert,
    private readonly nodeOf: (nodeId: string) => IngressNode | undefined,
    private readonly connectTimeoutMs = 2_000,
  ) {}

  /** A connection to the node of `nodeId`, checked and not yet asked for anything. */
  private handshake(nodeId: string): Promise<TLSSocket> {
    const node = this.nodeOf(nodeId);
    if (!node) return Promise.reject(new IngressError(`node ${nodeId} is not in the registry`, 'ECONNREFUSED'));
    const { host, port } = splitHostPort(node.ingress);
    return new Promise((resolve, reject) => {
      const socket = connect({
        host,
        port,
        cert: this.cert.certPem,
        key: this.cert.keyPem,
        minVersion: 'TLSv1.3',
        // The node is pinned by the key in its registry record, not by name or CA.
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
        servername: '',
      });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          new IngressError(
            `node ${nodeId} at ${node.ingress} did not answer within ${this.connectTimeoutMs} ms`,
            'UND_ERR_CONNECT_TIMEOUT',
          ),
        );
      }, this.connectTimeoutMs);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        if (peerKeyHex(socket) !== node.publicKey) {
          socket.destroy();
          reject(new IngressError(`node ${nodeId} at ${node.ingress} presented another key than its registry record`, 'ECONNREFUSED'));
          return;
        }
        resolve(socket);
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new IngressError(`cannot reach node ${nodeId} at ${node.ingress}: ${err.message}`, err.code ?? 'ECONNREFUSED'));
      });
    });
  }

  /** One answer line from the node. */
  private answer(socket: TLSSocket): Promise<{ line: string; rest: Buffer }> {
    return new Promise((resolve, reject) => {
      const reader = new LineReader();
      const timer = setTimeout(() => fail(new IngressError('node ingress did not answer', 'UND_ERR_CONNECT_TIMEOUT')), LINE_DEADLINE_MS);
      const fail = (err: Error) => {
        cleanup();
        socket.destroy();
        reject(err);
      };
      const onData = (chunk: Buffer) => {
        try {
          const got = reader.push(chunk);
          if (!got) return;
          cleanup();
          resolve(got);
        } catch (err) {
          fail(err as Error);
        }
      };
      const onEnd = () => fail(new IngressError('node ingress closed the connection', 'ECONNRESET'));
      const cleanup = () => {
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('end', onEnd);
        socket.off('error', fail);
      };
      socket.on('data', onData);
      socket.once('end', onEnd);
      socket.once('error', fail);
    });
  }

  /** A connection that carries the bytes of replica `instanceId`.`slot` on node `nodeId`. */
  async replica(nodeId: string, instanceId: string, slot: number): Promise<TLSSocket> {
    const socket = await this.handshake(nodeId);
    socket.write(encodeRequest({ op: 'replica', instanceId, slot }));
    const { line, rest } = await this.answer(socket);
    if (line !== 'OK') {
      socket.destroy();
      // The replica is not there (moved, restarting): nothing was sent to it, so this is retryable.
      throw new IngressError(`node ${nodeId}: ${line.replace(/^ERR /, '')}`, 'ECONNREFUSED');
    }
    // Replicas speak only when spoken to; anything already read belongs to the caller.
    if (rest.length > 0) socket.unshift(rest);
    return socket;
  }

  /** Round-trip of one ping to a node, in ms; rejects if it does not answer. */
  async ping(nodeId: string, socket?: TLSSocket): Promise<{ ms: number; socket: TLSSocket }> {
    const s = socket && !socket.destroyed ? socket : await this.handshake(nodeId);
    const t0 = performance.now();
    s.write(encodeRequest({ op: 'ping' }));
    const { line } = await this.answer(s);
    if (line !== 'PONG') throw new IngressError(`node ${nodeId} answered ${line}`, 'ECONNRESET');
    return { ms: performance.now() - t0, socket: s };
  }
}
