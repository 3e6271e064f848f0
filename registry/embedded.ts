/**
 * The embedded registry: one process hosts the store (persisted in its data dir) and serves it to the
 * other processes of the machine over a Unix socket, so `npm start` needs nothing installed. The process
 * that binds the socket is the only writer of the data dir; binding is exclusive, so it doubles as a lock.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, realpathSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { resolve } from 'node:path';
import type {
  KeyValue,
  Lease,
  RangeResult,
  Registry,
  TxnRequest,
  TxnResult,
  Watch,
  WatchEvent,
  WatchOptions,
} from '../protocol/registry.js';
import { FileJournal } from './journal.js';
import { HeldLeases, KeptLease } from './lease-keeper.js';
import { Store, WatchCompactedError } from './store.js';

/** Linux abstract socket names need no file, never go stale and have no path-length problem. */
export function socketPathFor(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const id = createHash('sha256')
    .update(realpathSync(resolve(dir)))
    .digest('hex')
    .slice(0, 24);
  return process.platform === 'linux' ? `\0allegra-registry-${id}` : resolve(dir, 'registry.sock');
}

/** The store of a data dir, recovered from its snapshot and log; the journal keeps it durable from here on. */
export function openDurableStore(dir: string, opts: { compactAfter?: number } = {}): { store: Store; journal: FileJournal } {
  const { journal, snapshot, entries } = FileJournal.open(resolve(dir), opts);
  const store = new Store(journal);
  store.restore(snapshot, entries);
  return { store, journal };
}

/** A Registry over a Store in this process. */
export class LocalRegistry implements Registry {
  private closed = false;
  private readonly leases = new HeldLeases();

  constructor(protected readonly store: Store) {}

  async get(key: string): Promise<KeyValue | undefined> {
    return this.store.get(key);
  }
  async list(prefix: string): Promise<RangeResult> {
    return this.store.range(prefix);
  }
  async put(key: string, value: string, opts: { lease?: string } = {}): Promise<number> {
    return this.store.txn({
      compare: [],
      success: [opts.lease ? { type: 'put', key, value, lease: opts.lease } : { type: 'put', key, value }],
    }).revision;
  }
  async delete(key: string): Promise<boolean> {
    return (
      this.store.txn({ compare: [{ key, target: 'version', equals: 0 }], success: [], failure: [{ type: 'delete', key }] }).succeeded ===
      false
    );
  }
  async txn(request: TxnRequest): Promise<TxnResult> {
    return this.store.txn(request);
  }
  watch(prefix: string, onEvents: (events: WatchEvent[]) => void, opts: WatchOptions = {}): Watch {
    let open = true;
    // Deliver asynchronously, like a remote backend, so callers never re-enter the store from a commit.
    const deliver = (events: WatchEvent[]) => queueMicrotask(() => open && onEvents(events));
    let cancel: () => void = () => {};
    try {
      cancel = this.store.watch(prefix, deliver, opts.fromRevision);
    } catch (err) {
      if (!(err instanceof WatchCompactedError)) throw err;
      queueMicrotask(() => open && opts.onCompacted?.(err.currentRevision));
    }
    return {
      close: () => {
        open = false;
        cancel();
      },
    };
  }
  async grantLease(ttlMs: number): Promise<Lease> {
    const state = this.store.grantLease(ttlMs);
    const lease = new KeptLease(state.id, ttlMs, {
      keepAlive: async (id) => this.store.keepAlive(id),
      revoke: async (id) => this.store.revokeLease(id),
    });
    return this.leases.add(lease);
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.leases.stopAll();
  }
}

/** The hosting process's registry: the store, its journal, lease expiry and the socket server. */
export class EmbeddedHost extends LocalRegistry {
  private readonly ticker: NodeJS.Timeout;

  private constructor(
    store: Store,
    private readonly journal: FileJournal,
    private readonly server: Server,
    readonly socketPath: string,
  ) {
    super(store);
    this.ticker = setInterval(() => {
      store.expireLeases();
      if (journal.needsCompaction) journal.compact(store.snapshot());
    }, 100);
    this.ticker.unref();
  }

  /** Binds the socket for `dir`; rejects with code EADDRINUSE if another process hosts it. */
  static async start(dir: string): Promise<EmbeddedHost> {
    const socketPath = socketPathFor(dir);
    const server = createServer();
    await new Promise<void>((resolvePromise, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolvePromise();
      });
    });
    // Only the socket owner may open the journal: binding first makes the data dir single-writer.
    const { store, journal } = openDurableStore(dir);
    const host = new EmbeddedHost(store, journal, server, socketPath);
    server.on('request', (req, res) => void host.handle(req, res));
    server.keepAliveTimeout = 60_000;
    return host;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://registry');
    try {
      if (req.method === 'GET' && url.pathname === '/v1/watch') return this.serveWatch(url, req, res);
      const body = await readJson(req);
      let result: unknown;
      switch (url.pathname) {
        case '/v1/get':
          result = { kv: this.store.get(String(body.key)) ?? null };
          break;
        case '/v1/list':
          result = this.store.range(String(body.prefix));
          break;
        case '/v1/txn':
          result = this.store.txn(body as unknown as TxnRequest);
          break;
        case '/v1/lease/grant':
          result = { id: this.store.grantLease(Number(body.ttlMs)).id };
          break;
        case '/v1/lease/keepalive':
          result = { ok: this.store.keepAlive(String(body.id)) };
          break;
        case '/v1/lease/revoke':
          this.store.revokeLease(String(body.id));
          result = { ok: true };
          break;
        default:
          res.writeHead(404).end();
          return;
      }
      const json = JSON.stringify(result);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) }).end(json);
    } catch (err) {
      const json = JSON.stringify({ error: (err as Error).message });
      if (!res.headersSent) res.writeHead(400, { 'content-type': 'application/json' });
      res.end(json);
    }
  }

  /** Streams watch events as JSON lines; a heartbeat line lets the client notice a dead connection. */
  private serveWatch(url: URL, req: IncomingMessage, res: ServerResponse): void {
    const prefix = url.searchParams.get('prefix') ?? '';
    const fromParam = url.searchParams.get('from');
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    res.write(`${JSON.stringify({ revision: this.store.revision })}\n`);
    let cancel: () => void = () => {};
    try {
      cancel = this.store.watch(
        prefix,
        (events) => res.write(`${JSON.stringify({ events })}\n`),
        fromParam ? Number(fromParam) : undefined,
      );
    } catch (err) {
      if (!(err instanceof WatchCompactedError)) throw err;
      res.end(`${JSON.stringify({ compacted: err.currentRevision })}\n`);
      return;
    }
    const heartbeat = setInterval(() => res.write('{}\n'), 2_000);
    const stop = () => {
      clearInterval(heartbeat);
      cancel();
    };
    req.on('close', stop);
    res.on('close', stop);
  }

  override async close(): Promise<void> {
    await super.close();
    clearInterval(this.ticker);
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
    this.journal.close();
  }
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  if (chunks.length === 0) return {};
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
}
