/**
 * What the agents' and the gateways' health probes share: a replica that speaks only HTTP/2 with prior
 * knowledge (h2c — every grpc-js or grpc-go server) never answers the probes' HTTP/1.1 GET, so after an
 * HTTP/1 failure that is not "nothing listens" the same GET is sent over HTTP/2. Any answer below 500 counts
 * (gRPC servers answer a plain GET with 415). Without it a gRPC app would never be healthy, never routed.
 */
import { connect } from 'node:http2';
import type { Duplex } from 'node:stream';

/** Failures that say nothing listens there, or that it is too slow: asking again over HTTP/2 would not help. */
const NOT_LISTENING = new Set(['ECONNREFUSED', 'ENOENT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** Whether an HTTP/1 probe's failure may be a server that speaks only HTTP/2. */
export function worthAskingOverH2(err: unknown): boolean {
  const e = err as { code?: string; cause?: { code?: string } };
  return !NOT_LISTENING.has(e?.cause?.code ?? e?.code ?? '');
}

/** One GET of `path` over HTTP/2 on the connection `open` makes (closed afterwards): answered below 500. */
export function h2cAnswers(open: () => Duplex, path: string, timeoutMs: number, userAgent: string): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    let socket: Duplex | undefined;
    const session = connect('http://replica', {
      createConnection: () => {
        socket = open();
        return socket;
      },
    });
    const done = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      socket?.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    session.on('error', () => done(false));
    const req = session.request({ ':method': 'GET', ':path': path, 'user-agent': userAgent });
    req.on('response', (headers) => done(Number(headers[':status']) < 500));
    req.on('error', () => done(false));
    req.end();
  });
}
