/**
 * The signed RPC client used by the CLI and by agents talking to their peers. It is the one module of
 * protocol/ that does I/O: keeping it here keeps the wire format (signature headers, error bodies) in one
 * place next to the code that verifies it.
 *
 * Every request is signed for one audience: the node id of the agent at `baseUrl`. The client learns it
 * from the agent's unsigned `GET /v1/health` once per process (or is told it), so a captured request is
 * worthless at any other agent.
 *
 * Given several agents, the client uses the first that answers: when an agent cannot be reached at all
 * (refused, unreachable, no answer to connect), nothing was sent, so the request is signed again for the
 * next agent and sent there, and `onFailover` is told. Any agent of the network serves every command.
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

/** Errors that mean the request never reached the agent: safe to send to another one. */
const NOT_REACHED = new Set([
  'ECONNREFUSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

class NotReached extends AllegraError {
  reason = '';
  /** Failed while learning the audience: not even a streamed body was touched. */
  beforeBody = false;
}

export interface RpcClientOptions {
  /** The node id of the (first) agent, when the caller knows it (peers do). */
  audience?: string;
  /** Told when an agent did not answer and the next one is used. */
  onFailover?: (from: string, to: string, reason: string) => void;
}

export class RpcClient {
  private readonly urls: string[];
  private current = 0;
  private readonly onFailover?: RpcClientOptions['onFailover'];

  constructor(
    baseUrls: string | string[],
    private readonly keyPair: KeyPair,
    opts: string | RpcClientOptions = {},
  ) {
    this.urls = (Array.isArray(baseUrls) ? baseUrls : [baseUrls]).map((u) => new URL(u).origin);
    if (this.urls.length === 0) throw new Error('RpcClient needs at least one agent URL');
    const o = typeof opts === 'string' ? { audience: opts } : opts;
    if (o.audience) audiences.set(this.urls[0] as string, o.audience);
    this.onFailover = o.onFailover;
  }

  /** The agent requests currently go to. */
  get baseUrl(): string {
    return this.urls[this.current] as string;
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
      throw unreachable(this.baseUrl, err, true);
    }
    if (typeof node !== 'string' || node === '') throw new AllegraError('unavailable', `${this.baseUrl} is not an Allegra agent`);
    audiences.set(this.baseUrl, node);
    return node;
  }

  /** Sends a signed request and returns the raw response (for streamed bodies), failing over between agents. */
  async send(call: RpcCall): Promise<Awaited<ReturnType<typeof request>>> {
    for (let tried = 1; ; tried++) {
      try {
        return await this.sendOnce(call);
      } catch (err) {
        // A stream is consumed by the first try; only a request that never left can go elsewhere.
        const replayable = !(call.body && 'stream' in call.body) || (err instanceof NotReached && err.beforeBody);
        if (!(err instanceof NotReached) || !replayable || tried >= this.urls.length) throw err;
        const from = this.baseUrl;
        this.current = (this.current + 1) % this.urls.length;
        this.onFailover?.(from, this.baseUrl, err.reason);
      }
    }
  }

  private async sendOnce(call: RpcCall): Promise<Awaited<ReturnType<typeof request>>> {
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

function unreachable(baseUrl: string, err: unknown, beforeBody = false): AllegraError {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const reason = code === 'ECONNREFUSED' ? 'connection refused' : (err as Error).message;
  const message = `cannot reach ${baseUrl}: ${reason}`;
  if (!NOT_REACHED.has(code) && !beforeBody) return new AllegraError('unavailable', message);
  const e = new NotReached('unavailable', message);
  e.reason = reason;
  e.beforeBody = beforeBody;
  return e;
}
