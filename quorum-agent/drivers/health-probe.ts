/**
 * One health probe of a replica: an HTTP/1.1 GET of the health path, healthy when answered below 500, asked
 * again over h2c when the replica may speak only HTTP/2 (a gRPC server: protocol/health-probe.ts).
 */
import { connect as netConnect } from 'node:net';
import { Client, type Dispatcher, request } from 'undici';
import { h2cAnswers, worthAskingOverH2 } from '../../protocol/health-probe.js';

export interface ProbeTarget {
  /** `http://HOST:PORT` of the replica, or a Unix socket it listens on. */
  url?: string;
  socketPath?: string;
  /** A client for `socketPath` kept across probes (HTTP/1). */
  dispatcher?: Dispatcher;
}

export async function probeHealth(target: ProbeTarget, path: string, timeoutMs: number): Promise<boolean> {
  const base = target.socketPath ? 'http://localhost' : (target.url ?? '');
  // A Unix socket without a kept client gets one for this probe.
  const own = target.socketPath && !target.dispatcher ? new Client('http://localhost', { socketPath: target.socketPath }) : undefined;
  const dispatcher = target.dispatcher ?? own;
  try {
    const res = await request(`${base}${path}`, {
      method: 'GET',
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      headers: { 'user-agent': 'allegra-health' },
      ...(dispatcher ? { dispatcher } : {}),
    });
    await res.body.dump();
    return res.statusCode < 500;
  } catch (err) {
    if (!worthAskingOverH2(err)) return false;
    return probeH2c(target, path, timeoutMs);
  } finally {
    await own?.close().catch(() => {});
  }
}

/** The same GET over HTTP/2 with prior knowledge, on a connection of its own. */
export function probeH2c(target: ProbeTarget, path: string, timeoutMs: number): Promise<boolean> {
  const url = target.url ? new URL(target.url) : undefined;
  const open = () =>
    target.socketPath
      ? netConnect(target.socketPath)
      : netConnect(Number(url?.port || 80), url?.hostname.replace(/^\[|\]$/g, '') ?? '127.0.0.1');
  return h2cAnswers(open, path, timeoutMs, 'allegra-health');
}
