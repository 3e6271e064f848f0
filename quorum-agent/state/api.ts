/**
 * The state API an instance's replicas see at ALLEGRA_STATE_URL (../shared/STATE-API.md), served by their
 * own agent on a socket that only that instance's sandbox holds. Reads are linearizable (read index on the
 * member's verified copy), writes are answered once committed on a majority (writer.ts). Every input is
 * bounded: keys 512 bytes, values 1 MiB (413), requests in flight and watchers per instance (503).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from '../../protocol/registry.js';
import { type StateCopy, StateUnavailable } from './copy.js';
import { keyProblem, MAX_VALUE_BYTES, stateKeys } from './layout.js';
import type { Condition, Quota, StateWriter } from './writer.js';

/** Open connections to one instance's API (in flight, watching or idle): beyond it new ones are refused. */
export const MAX_STATE_CONNECTIONS = 512;

export interface StateApiOptions {
  registry: Registry;
  copy: StateCopy;
  writer: StateWriter;
  quota: Quota;
  log: Logger;
  maxInFlight?: number;
  maxWatchers?: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function readValue(req: IncomingMessage): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > MAX_VALUE_BYTES)
    return Promise.reject(new HttpError(413, `values are at most ${MAX_VALUE_BYTES} bytes`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_VALUE_BYTES) {
        req.pause();
        reject(new HttpError(413, `values are at most ${MAX_VALUE_BYTES} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

/** `"12"` or `12` → 12; `*` handled by the caller. */
function revisionOf(header: string | undefined, name: string): number | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*(?:W\/)?"?(\d{1,16})"?\s*$/.exec(header);
  if (!m) throw new HttpError(400, `${name} must be a revision, like "12"`);
  return Number(m[1]);
}

function conditionOf(req: IncomingMessage): Condition {
  const noneMatch = req.headers['if-none-match'];
  if (noneMatch !== undefined && noneMatch.trim() !== '*') throw new HttpError(400, 'If-None-Match supports only *');
  return { ifMatch: revisionOf(req.headers['if-match'] as string | undefined, 'If-Match'), ifNoneMatch: noneMatch !== undefined };
}

function keyOf(encoded: string): string {
  let key: string;
  try {
    key = decodeURIComponent(encoded);
  } catch {
    throw new HttpError(400, 'the key is not valid percent-encoded UTF-8');
  }
  const problem = keyProblem(key);
  if (problem) throw new HttpError(400, problem);
  return key;
}

export class StateApi {
  private inFlight = 0;
  private watchers = 0;
  readonly server: Server;

  constructor(private readonly opts: StateApiOptions) {
    this.server = this.newServer();
  }

  /**
   * Idle keep-alive connections stay open longer (65 s) than clients keep idle ones (Node's agent 5 s, undici
   * 4 s): the client always closes first, so an app never reuses a connection the API is closing at that
   * moment ("socket hang up", seen through the sandbox's relay, which passes the close on late). Connections
   * per instance are bounded, so a replica cannot hold the agent's descriptors.
   */
  private newServer(): Server {
    const server = createServer(
      { maxHeaderSize: 8 * 1024, requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 65_000 },
      (req, res) => void this.handle(req, res),
    );
    server.maxConnections = MAX_STATE_CONNECTIONS;
    return server;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://state');
    if (url.pathname === '/v1/watch' && req.method === 'GET') return this.watch(url, req, res);
    if (this.inFlight >= (this.opts.maxInFlight ?? 256)) {
      req.resume();
      return json(res, 503, { error: 'too many state requests in flight' }, { 'retry-after': '1' });
    }
    this.inFlight++;
    try {
      await this.route(url, req, res);
    } catch (err) {
      if (err instanceof HttpError) {
        req.resume();
        json(res, err.status, { error: err.message }, err.headers);
      } else if (err instanceof StateUnavailable) {
        req.resume();
        json(res, 503, { error: err.message }, { 'retry-after': '1' });
      } else {
        this.opts.log.error({ err }, 'state request failed');
        json(res, 500, { error: 'internal error' });
      }
    } finally {
      this.inFlight--;
    }
  }

  private async route(url: URL, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { copy, writer } = this.opts;
    if (url.pathname.startsWith('/v1/kv/')) {
      const key = keyOf(url.pathname.slice('/v1/kv/'.length));
      if (req.method === 'GET') {
        await copy.current();
        const e = copy.entries.get(key);
        if (!e) throw new HttpError(404, 'no such key');
        const value = Buffer.from(e.value, 'base64');
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': value.length, etag: `"${e.modRevision}"` });
        res.end(value);
        return;
      }
      if (req.method === 'PUT' || req.method === 'DELETE') {
        const cond = conditionOf(req);
        const value = req.method === 'PUT' ? (await readValue(req)).toString('base64') : undefined;
        const r = await writer.write(key, value, cond);
        if (r.ok) return json(res, 200, { revision: r.revision });
        if (r.reason === 'precondition') throw new HttpError(412, r.message);
        if (r.reason === 'quota') throw new HttpError(507, r.message);
        throw new HttpError(404, r.message);
      }
      throw new HttpError(405, 'use GET, PUT or DELETE on a key');
    }
    if (url.pathname === '/v1/kv' && req.method === 'GET') {
      const prefix = url.searchParams.get('prefix') ?? '';
      const limitText = url.searchParams.get('limit');
      const limit = limitText === null ? 1_000 : Number(limitText);
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new HttpError(400, 'limit is 1 to 10000');
      await copy.current();
      const items = [...copy.entries]
        .filter(([k]) => k.startsWith(prefix))
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .slice(0, limit)
        .map(([k, e]) => ({ key: k, revision: e.modRevision, size: Buffer.byteLength(e.value, 'base64') }));
      return json(res, 200, { items, revision: copy.revision });
    }
    if (url.pathname === '/v1/status' && req.method === 'GET') {
      return json(res, 200, { ...copy.status(), quota: this.opts.quota });
    }
    throw new HttpError(404, `no such state endpoint: ${req.method} ${url.pathname}`);
  }

  /** Server-sent events: one per change of a key under the prefix after revision `from`. */
  private watch(url: URL, req: IncomingMessage, res: ServerResponse): void {
    if (this.watchers >= (this.opts.maxWatchers ?? 64)) {
      return json(res, 503, { error: 'too many watchers for this instance' }, { 'retry-after': '5' });
    }
    const prefix = url.searchParams.get('prefix') ?? '';
    const fromText = url.searchParams.get('from');
    let from: number | undefined;
    if (fromText !== null) {
      from = Number(fromText);
      if (!Number.isSafeInteger(from) || from < 0) return json(res, 400, { error: 'from is a revision' });
    }
    this.watchers++;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write(': watching\n\n');
    const base = stateKeys.values(this.opts.copy.instanceId);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      this.watchers--;
      clearInterval(heartbeat);
      watch.close();
      res.end();
    };
    const watch = this.opts.registry.watch(
      base + prefix,
      (events) => {
        for (const e of events) {
          res.write(
            `data: ${JSON.stringify({ key: e.key.slice(base.length), revision: e.modRevision, deleted: e.type === 'delete' })}\n\n`,
          );
        }
        // A reader that does not keep up is dropped rather than buffered without bound.
        if (res.writableLength > 1024 * 1024) close();
      },
      {
        ...(from !== undefined ? { fromRevision: from + 1 } : {}),
        onCompacted: (revision) => {
          res.write(`event: compacted\ndata: ${JSON.stringify({ revision })}\n\n`);
          close();
        },
      },
    );
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
    req.once('close', close);
  }

  private loopback: Server | null = null;

  listen(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => resolve());
    });
  }

  /**
   * The same API on a loopback TCP port, for replicas that run unsandboxed (the operator's trusted owners):
   * they share the host's network, so any local process can reach it — which is why sandboxed replicas get
   * a socket only their sandbox holds instead.
   */
  async listenLoopback(): Promise<string> {
    if (!this.loopback) {
      const server = this.newServer();
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
      this.loopback = server;
    }
    return `http://127.0.0.1:${(this.loopback.address() as { port: number }).port}/v1/`;
  }

  async close(): Promise<void> {
    for (const s of [this.server, this.loopback]) {
      if (!s) continue;
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  }
}
