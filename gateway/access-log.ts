/**
 * One access-log line per request, in pino's line format (level, time, pid, hostname, name, then fields)
 * and on the logger's own stream, so log tooling sees one uniform JSON stream. Lines are formatted with a
 * template rather than `logger.info`: pino's generic serializer cost ~2.7 µs a line here, the template
 * ~0.5 µs. Every value that can come from a client (path) is escaped with JSON.stringify; the others are
 * validated upstream (method by the HTTP parser, id by the request-id rule, host by the route lookup).
 */
import { hostname } from 'node:os';
import pino, { type Logger } from 'pino';

export interface AccessEntry {
  id: string;
  method: string;
  host: string;
  path: string;
  status: number;
  ms: number;
  upstream: string;
  attempts: number;
  grpc?: boolean;
}

export type AccessLog = (entry: AccessEntry) => void;

/** Writes access lines to the stream behind `logger`. */
export function accessLogFor(logger: Logger, name = 'gateway'): AccessLog {
  const stream = (logger as unknown as Record<symbol, { write(line: string): unknown }>)[pino.symbols.streamSym];
  if (!stream) throw new Error('logger has no stream');
  const prefix = `{"level":30,"time":`;
  const middle = `,"pid":${process.pid},"hostname":${JSON.stringify(hostname())},"name":${JSON.stringify(name)},"access":true,"id":"`;
  return (e) => {
    stream.write(
      `${prefix}${Date.now()}${middle}${e.id}","method":"${e.method}","host":${JSON.stringify(e.host)},"path":${JSON.stringify(e.path)},"status":${e.status},"ms":${Math.round(e.ms * 1000) / 1000},"upstream":"${e.upstream}","attempts":${e.attempts}${e.grpc ? ',"grpc":true' : ''},"msg":"access"}\n`,
    );
  };
}
