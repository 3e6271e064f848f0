/**
 * What happens to a connection before HTTP: an optional PROXY protocol header (v1 or v2, from a load
 * balancer in front) gives the real client address; then the first bytes tell HTTP/2 with prior
 * knowledge (h2c) from HTTP/1.x, and the connection is handed to the matching server.
 */
import type { Server as HttpServer } from 'node:http';
import type { Http2Server } from 'node:http2';
import type { Socket } from 'node:net';
import { V1BinaryProxyProtocol, V2ProxyProtocol } from 'proxy-protocol-js';

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ');

/** The client address learned from a PROXY header, kept on the socket. */
const CLIENT = Symbol('allegra.client');
type TaggedSocket = Socket & { [CLIENT]?: { ip: string; port: number } };

export function proxiedClient(socket: unknown): { ip: string; port: number } | undefined {
  return (socket as TaggedSocket | undefined)?.[CLIENT];
}

export interface SniffOptions {
  proxyProtocol: boolean;
  h1: HttpServer;
  /** Where h2c prior-knowledge connections go; null: HTTP/1 only. */
  h2c: Http2Server | null;
  timeoutMs?: number;
  /** Client addresses refused (after the PROXY header told who the client is). */
  isBlocked?: (ip: string) => boolean;
}

type Parsed = { done: false } | { done: true; client?: { ip: string; port: number }; rest: Buffer } | { invalid: true };

function parseProxyHeader(buf: Buffer): Parsed {
  if (buf.length >= 12 && buf.subarray(0, 12).equals(V2_SIGNATURE)) {
    if (buf.length < 16) return { done: false };
    const total = 16 + buf.readUInt16BE(14);
    if (buf.length < total) return { done: false };
    try {
      const p = V2ProxyProtocol.parse(new Uint8Array(buf.subarray(0, total)));
      const addr = p.proxyAddress as { sourceAddress?: { address: number[] }; sourcePort?: number };
      const bytes = addr.sourceAddress?.address;
      let ip: string | undefined;
      if (bytes?.length === 4) ip = bytes.join('.');
      else if (bytes?.length === 16)
        ip = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i] as number) * 256 + (bytes[2 * i + 1] as number)).toString(16)).join(':');
      // LOCAL command (health checks from the balancer itself) carries no address: keep the peer's.
      return { done: true, client: ip ? { ip, port: addr.sourcePort ?? 0 } : undefined, rest: buf.subarray(total) };
    } catch {
      return { invalid: true };
    }
  }
  const prefix = buf.subarray(0, Math.min(buf.length, V1_PREFIX.length));
  if (!V1_PREFIX.subarray(0, prefix.length).equals(prefix)) return { invalid: true };
  const end = buf.indexOf('\r\n');
  if (end < 0) return buf.length > 107 ? { invalid: true } : { done: false };
  try {
    const p = V1BinaryProxyProtocol.parse(new Uint8Array(buf.subarray(0, end + 2)));
    const src = p.source as { ipAddress?: string; port?: number } | undefined;
    return { done: true, client: src?.ipAddress ? { ip: src.ipAddress, port: src.port ?? 0 } : undefined, rest: buf.subarray(end + 2) };
  } catch {
    return { invalid: true };
  }
}

/** Returns the `connection` listener that sniffs and dispatches each new socket. */
export function sniffingAcceptor(opts: SniffOptions): (socket: Socket) => void {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return (socket: Socket) => {
    let buf: Buffer = Buffer.alloc(0);
    let proxyDone = !opts.proxyProtocol;
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    const dispatch = (rest: Buffer, h2: boolean) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.pause();
      if (h2 && opts.h2c) {
        // The HTTP/2 session picks up bytes still buffered on the socket when it takes it over.
        socket.unshift(rest);
        opts.h2c.emit('connection', socket);
        return;
      }
      // The HTTP/1 parser does not look at that buffer: feed it the bytes as if they had just arrived.
      opts.h1.emit('connection', socket);
      if (rest.length > 0) socket.emit('data', rest);
      socket.resume();
    };
    const onError = () => {
      clearTimeout(timer);
      socket.destroy();
    };
    const onData = (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (!proxyDone) {
        const parsed = parseProxyHeader(buf);
        if ('invalid' in parsed) {
          // A listener configured for PROXY protocol only accepts connections that start with it.
          socket.destroy();
          clearTimeout(timer);
          return;
        }
        if (!parsed.done) return;
        proxyDone = true;
        if (parsed.client) (socket as TaggedSocket)[CLIENT] = parsed.client;
        if (parsed.client && opts.isBlocked?.(parsed.client.ip)) {
          clearTimeout(timer);
          socket.destroy();
          return;
        }
        buf = parsed.rest;
        if (buf.length === 0) return;
      }
      if (opts.h2c) {
        const n = Math.min(buf.length, H2_PREFACE.length);
        const isPrefixOfPreface = H2_PREFACE.subarray(0, n).equals(buf.subarray(0, n));
        if (isPrefixOfPreface && buf.length < H2_PREFACE.length) return; // need more bytes to decide
        return dispatch(buf, isPrefixOfPreface);
      }
      dispatch(buf, false);
    };
    socket.on('data', onData);
    socket.on('error', onError);
  };
}
