/**
 * The signed RPC client used by the CLI and by agents talking to their peers. It is the one module of
 * protocol/ that does I/O: keeping it here keeps the wire format (signature headers, error bodies) in one
 * place next to the code that verifies it.
 */
import type { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { AllegraError, type ErrorCode, isErrorBody } from './errors.js';
import { type KeyPair, signRequest } from './signing.js';

export type RpcBody = { json: unknown } | { bytes: Uint8Array; contentType?: string } | { stream: Readable; sha256: string; size: number };

export interface RpcCall {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  body?: RpcBody;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

const dispatcher = new Agent({ keepAliveTimeout: 10_000, connect: { timeout: 5_000 } });

export class RpcClient {
  constructor(
    readonly baseUrl: string,
    private readonly keyPair: KeyPair,
  ) {}

  async call<T>(call: RpcCall): Promise<T> {
    const res = await this.send(call);
    const text = await res.body.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (res.statusCode >= 400) {
      if (isErrorBody(parsed)) throw new AllegraError(parsed.error.code as ErrorCode, parsed.error.message);
      throw new AllegraError(
        res.statusCode >= 500 ? 'unavailable' : 'bad_request',
        `${call.method} ${call.path} failed with HTTP ${res.statusCode}`,
      );
    }
    return parsed as T;
  }

  /** Sends a signed request and returns the raw response (for streamed bodies). */
  async send(call: RpcCall): Promise<Awaited<ReturnType<typeof request>>> {
    let body: string | Uint8Array | Readable | undefined;
    let sign: { body?: Uint8Array | string; bodySha256?: string } = {};
    const headers: Record<string, string> = { ...call.headers };
    if (call.body && 'json' in call.body) {
      body = JSON.stringify(call.body.json);
      sign = { body };
      headers['content-type'] = 'application/json';
    } else if (call.body && 'bytes' in call.body) {
      body = call.body.bytes;
      sign = { body };
      headers['content-type'] = call.body.contentType ?? 'application/octet-stream';
    } else if (call.body && 'stream' in call.body) {
      body = call.body.stream;
      sign = { bodySha256: call.body.sha256 };
      headers['content-type'] = 'application/octet-stream';
      headers['content-length'] = String(call.body.size);
    }
    Object.assign(headers, signRequest(this.keyPair, { method: call.method, path: call.path, ...sign }));
    const timeout = call.timeoutMs ?? 30_000;
    try {
      return await request(new URL(call.path, this.baseUrl), {
        method: call.method,
        headers,
        body,
        dispatcher,
        headersTimeout: timeout,
        bodyTimeout: timeout,
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const reason = code === 'ECONNREFUSED' ? 'connection refused' : (err as Error).message;
      throw new AllegraError('unavailable', `cannot reach ${this.baseUrl}: ${reason}`);
    }
  }
}
