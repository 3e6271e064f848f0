/**
 * The signed RPC client used by the CLI and by agents talking to their peers. It is the one module of
 * protocol/ that does I/O: keeping it here keeps the wire format (signature headers, error bodies) in one
 * place next to the code that verifies it.
 *
 * Every request is signed for one audience: the node id of the agent at `baseUrl`. The client learns it
 * from the agent's unsigned `GET /v1/health` once per process (or is told it), so a captured request is
 * worthless at any other agent.
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
  /** Extra headers; `x-allegra-*` ones are covered by the signature. */
  headers?: Record<string, string>;
  timeoutMs?: number;
}

const dispatcher = new Agent({ keepAliveTimeout: 10_000, connect: { timeout: 5_000 } });
/** Node ids learned per agent URL, shared by every client of the process. */
const audiences = new Map<string, string>();

export class RpcClient {
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly keyPair: KeyPair,
    /** The node id of the agent at baseUrl, when the caller knows it (peers do). */
    audience?: string,
  ) {
    this.baseUrl = new URL(baseUrl).origin;
    if (audience) audiences.set(this.baseUrl, audience);
  }

  async call<T>(call: RpcCall): Promise<T> {
    try {
      return await this.callOnce<T>(call);
    } catch (err) {
      // An agent that restarted between signing and receiving refuses the request (its nonce cache is new):
      // a fresh signature is all it takes. A streamed body cannot be sent twice.
      const retryable = err instanceof AllegraError && err.code === 'unauthenticated' && /before this agent started/.test(err.message);
      if (!retryable || (call.body && 'stream' in call.body)) throw err;
      return this.callOnce<T>(call);
    }
  }

  private async callOnce<T>(call: RpcCall): Promise<T> {
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

  /** The node id of the agent this client talks to. */
  async audience(): Promise<string> {
    const known = audiences.get(this.baseUrl);
    if (known) return known;
    let node: unknown;
    try {
      const res = await request(new URL('/v1/health', this.baseUrl), { dispatcher, headersTimeout: 10_000, bodyTimeout: 10_000 });
      node = res.statusCode === 200 ? ((await res.body.json()) as { node?: unknown }).node : await res.body.dump();
    } catch (err) {
      throw unreachable(this.baseUrl, err);
    }
    if (typeof node !== 'string' || node === '') throw new AllegraError('unavailable', `${this.baseUrl} is not an Allegra agent`);
    audiences.set(this.baseUrl, node);
    return node;
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
    const audience = await this.audience();
    const signed = signRequest(this.keyPair, { method: call.method, path: call.path, audience, headers, ...sign });
    const timeout = call.timeoutMs ?? 30_000;
    try {
      return await request(new URL(call.path, this.baseUrl), {
        method: call.method,
        headers: signed,
        body,
        dispatcher,
        headersTimeout: timeout,
        bodyTimeout: timeout,
      });
    } catch (err) {
      throw unreachable(this.baseUrl, err);
    }
  }
}

function unreachable(baseUrl: string, err: unknown): AllegraError {
  const code = (err as NodeJS.ErrnoException).code;
  const reason = code === 'ECONNREFUSED' ? 'connection refused' : (err as Error).message;
  return new AllegraError('unavailable', `cannot reach ${baseUrl}: ${reason}`);
}
