/**
 * The embedded registry: one process hosts the store (persisted in its data dir) and serves it to the
 * other processes of the machine over a Unix socket, so `npm start` needs nothing installed.
 *
 * - The host lock is a Linux abstract socket named after the data dir: binding is exclusive and the name
 *   vanishes with the process, so the process that holds it is the only writer of the data dir.
 * - Clients connect to `registry.sock` inside the data dir (0700), not to the abstract name: anyone on the
 *   machine could connect to an abstract socket, and could also bind the name first while the host is down
 *   and collect the tokens clients present. Only the operator's user can create or reach a file in the dir.
 * - Every request carries a role's token (registry/credentials.ts), checked before more than the headers is
 *   read, and is checked against the role table (protocol/roles.ts) before it touches the store.
 */
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, realpathSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { join, resolve } from 'node:path';
import type { z } from 'zod';
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
import { type Denial, RegistryAccessError, RegistryAuthError, type Role, readDenial, revokeDenial, txnDenial } from '../protocol/roles.js';
import { loadOrMintTokens, TokenTable } from './credentials.js';
import { FileJournal } from './journal.js';
import { HeldLeases, KeptLease } from './lease-keeper.js';
import { Store, WatchCompactedError } from './store.js';
import { AUTH_HEADER, MAX_REQUEST_BYTES, tokenOf, wire } from './wire.js';

/** Longest path a Unix socket address holds on Linux (sun_path is 108 bytes with the final NUL). */
const MAX_SOCKET_PATH = 107;

/** The socket clients connect to: a file in the data dir, so the dir's 0700 keeps everyone else out. */
export function socketPathFor(dir: string): string {
  const path = join(resolve(dir), 'registry.sock');
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new Error(`registry dir ${resolve(dir)} is too long a path for its Unix socket (at most ${MAX_SOCKET_PATH - 14} bytes)`);
  }
  return path;
}

/** The name whose binding makes a process the host of `dir`: abstract on Linux (no file to go stale). */
function hostLockFor(dir: string): string | null {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const id = createHash('sha256')
    .update(realpathSync(resolve(dir)))
    .digest('hex')
    .slice(0, 24);
  return process.platform === 'linux' ? `\0allegra-registry-${id}` : null;
}

function listen(server: Server | NetServer, path: string): Promise<void> {
  return new Promise<void>((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolvePromise();
    });
  });
}

function closeServer(server: Server | NetServer): Promise<void> {
  return new Promise<void>((r) => server.close(() => r()));
}

/** The store of a data dir, recovered from its snapshot and log; the journal keeps it durable from here on. */
export function openDurableStore(dir: string, opts: { compactAfter?: number } = {}): { store: Store; journal: FileJournal } {
  const { journal, snapshot, entries } = FileJournal.open(resolve(dir), opts);
  const store = new Store(journal);
  store.restore(snapshot, entries);
  return { store, journal };
}

/** A Registry over a Store in this process, acting as `role`: the same refusals a remote client gets. */
export class LocalRegistry implements Registry {
  private closed = false;
  private readonly leases = new HeldLeases();

  constructor(
    protected readonly store: Store,
    readonly role: Role = 'admin',
    /** What closing this registry also ends (a host's view closes the host). */
    private readonly onClose?: () => Promise<void>,
  ) {}

  private allow(denial: Denial | null): void {
    if (denial) throw new RegistryAccessError(denial);
  }

  async get(key: string): Promise<KeyValue | undefined> {
    this.allow(readDenial(this.role, 'get', key));
    return this.store.get(key);
  }
  async list(prefix: string): Promise<RangeResult> {
    this.allow(readDenial(this.role, 'list', prefix));
    return this.store.range(prefix);
  }
  async put(key: string, value: string, opts: { lease?: string } = {}): Promise<number> {
    return (
      await this.txn({ compare: [], success: [opts.lease ? { type: 'put', key, value, lease: opts.lease } : { type: 'put', key, value }] })
    ).revision;
  }
  async delete(key: string): Promise<boolean> {
    const res = await this.txn({ compare: [{ key, target: 'version', equals: 0 }], success: [], failure: [{ type: 'delete', key }] });
    return res.succeeded === false;
  }
  async txn(request: TxnRequest): Promise<TxnResult> {
    this.allow(txnDenial(this.role, request));
    return this.store.txn(request);
  }
  watch(prefix: string, onEvents: (events: WatchEvent[]) => void, opts: WatchOptions = {}): Watch {
    let open = true;
    const denial = readDenial(this.role, 'watch', prefix);
    if (denial) {
      queueMicrotask(() => open && opts.onError?.(new RegistryAccessError(denial)));
      return { close: () => (open = false) };
    }
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
      revoke: async (id) => {
        this.allow(revokeDenial(this.role, this.store.leaseKeys(id)));
        this.store.revokeLease(id);
      },
    });
    return this.leases.add(lease);
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.leases.stopAll();
    await this.onClose?.();
  }
}

/** The hosting process's registry: the store, its journal, lease expiry, the credentials and the socket server. */
export class EmbeddedHost extends LocalRegistry {
  private readonly ticker: NodeJS.Timeout;
  private readonly tokenTable: TokenTable;
  private readonly views = new Set<LocalRegistry>();
  private stopped = false;

  private constructor(
    store: Store,
    private readonly journal: FileJournal,
    private readonly server: Server,
    private readonly lock: NetServer | null,
    readonly socketPath: string,
    private readonly tokens: Record<Role, string>,
  ) {
    super(store, 'admin');
    this.tokenTable = new TokenTable(tokens);
    this.ticker = setInterval(() => {
      store.expireLeases();
      if (journal.needsCompaction) journal.compact(store.snapshot());
    }, 100);
    this.ticker.unref();
  }

  /** Takes the host lock of `dir` and serves it; rejects with code EADDRINUSE if another process hosts it. */
  static async start(dir: string): Promise<EmbeddedHost> {
    const socketPath = socketPathFor(dir);
    const lockName = hostLockFor(dir);
    const lock = lockName ? createNetServer((socket) => socket.destroy()) : null;
    if (lock && lockName) await listen(lock, lockName);
    const server = createServer({
      // Headers are all a refused client gets to send: keep them small and quick.
      maxHeaderSize: 8 * 1024,
      headersTimeout: 10_000,
      requestTimeout: 30_000,
    });
    let host: EmbeddedHost;
    try {
      // Holding the lock, a socket file left by a dead host is stale. (Without an abstract lock, as off
      // Linux, the socket file is the lock: binding fails with EADDRINUSE while it exists.)
      if (lock) rmSync(socketPath, { force: true });
      await listen(server, socketPath);
      chmodSync(socketPath, 0o600);
      // Only the lock holder may open the journal: the data dir has a single writer.
      const { store, journal } = openDurableStore(dir);
      host = new EmbeddedHost(store, journal, server, lock, socketPath, loadOrMintTokens(resolve(dir)));
    } catch (err) {
      if (server.listening) await closeServer(server);
      if (lock) await closeServer(lock);
      throw err;
    }
    server.on('request', (req, res) => void host.handle(req, res));
    server.keepAliveTimeout = 60_000;
    return host;
  }

  /** The token of `role`, to hand to a child process through its environment. */
  credential(role: Role): string {
    return this.tokens[role];
  }

  /** This host's store seen as `role` (a hosting agent still acts as an agent); closing it closes the host. */
  as(role: Role): Registry {
    if (role === 'admin') return this;
    const view = new LocalRegistry(this.store, role, () => this.close());
    this.views.add(view);
    return view;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const role = this.tokenTable.roleOf(tokenOf(req.headers[AUTH_HEADER]));
    if (!role) {
      const why = req.headers[AUTH_HEADER] ? 'the registry does not know this credential' : 'no credential presented';
      return refuse(req, res, 401, new RegistryAuthError(why).message);
    }
    if (Number(req.headers['content-length'] ?? 0) > MAX_REQUEST_BYTES) {
      return refuse(req, res, 413, `registry: request body exceeds ${MAX_REQUEST_BYTES} bytes`);
    }
    const url = new URL(req.url ?? '/', 'http://registry');
    try {
      if (req.method === 'GET' && url.pathname === '/v1/watch') return this.serveWatch(role, url, req, res);
      if (req.method === 'GET' && url.pathname === '/v1/whoami') return reply(res, 200, { role });
      if (req.method !== 'POST') return refuse(req, res, 405, 'registry: method not allowed');
      const body = await readJson(req);
      if (body === TOO_LARGE) return refuse(req, res, 413, `registry: request body exceeds ${MAX_REQUEST_BYTES} bytes`);
      let denial: Denial | null = null;
      let result: unknown;
      switch (url.pathname) {
        case '/v1/get': {
          const { key } = parse(wire.get, body);
          denial = readDenial(role, 'get', key);
          if (!denial) result = { kv: this.store.get(key) ?? null };
          break;
        }
        case '/v1/list': {
          const { prefix } = parse(wire.list, body);
          denial = readDenial(role, 'list', prefix);
          if (!denial) result = this.store.range(prefix);
          break;
        }
        case '/v1/txn': {
          const request = parse(wire.txn, body) as TxnRequest;
          denial = txnDenial(role, request);
          if (!denial) result = this.store.txn(request);
          break;
        }
        case '/v1/lease/grant':
          result = { id: this.store.grantLease(parse(wire.leaseGrant, body).ttlMs).id };
          break;
        case '/v1/lease/keepalive':
          result = { ok: this.store.keepAlive(parse(wire.leaseId, body).id) };
          break;
        case '/v1/lease/revoke': {
          const { id } = parse(wire.leaseId, body);
          denial = revokeDenial(role, this.store.leaseKeys(id));
          if (!denial) this.store.revokeLease(id);
          result = { ok: true };
          break;
        }
        default:
          return reply(res, 404, { error: `registry: no such endpoint ${url.pathname}` });
      }
      if (denial) return reply(res, 403, { error: new RegistryAccessError(denial).message, denied: denial });
      reply(res, 200, result);
    } catch (err) {
      if (!res.headersSent) reply(res, err instanceof InvalidRequest ? 400 : 500, { error: (err as Error).message });
      else res.end();
    }
  }

  /** Streams watch events as JSON lines; a heartbeat line lets the client notice a dead connection. */
  private serveWatch(role: Role, url: URL, req: IncomingMessage, res: ServerResponse): void {
    const prefix = url.searchParams.get('prefix') ?? '';
    const denial = readDenial(role, 'watch', prefix);
    if (denial) return reply(res, 403, { error: new RegistryAccessError(denial).message, denied: denial });
    const fromParam = url.searchParams.get('from');
    const from = fromParam === null ? undefined : Number(fromParam);
    if (from !== undefined && !(Number.isSafeInteger(from) && from >= 0))
      return reply(res, 400, { error: 'registry: invalid watch revision' });
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    res.write(`${JSON.stringify({ revision: this.store.revision })}\n`);
    let cancel: () => void = () => {};
    try {
      cancel = this.store.watch(prefix, (events) => res.write(`${JSON.stringify({ events })}\n`), from);
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
    if (this.stopped) return;
    this.stopped = true;
    await super.close();
    for (const v of this.views) await v.close();
    clearInterval(this.ticker);
    this.server.closeAllConnections();
    await closeServer(this.server);
    this.journal.close();
    // Released last: nobody may open the journal before it is closed here.
    if (this.lock) await closeServer(this.lock);
  }
}

class InvalidRequest extends Error {}

function parse<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  const r = schema.safeParse(body);
  if (!r.success)
    throw new InvalidRequest(`registry: invalid request: ${r.error.issues[0]?.path.join('.') || 'body'}: ${r.error.issues[0]?.message}`);
  return r.data;
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const json = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) }).end(json);
}

/** Answers and closes the connection without reading the request body: a refused client costs no more. */
function refuse(req: IncomingMessage, res: ServerResponse, status: number, error: string): void {
  const json = JSON.stringify({ error });
  res.shouldKeepAlive = false;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json), connection: 'close' });
  res.end(json, () => req.socket.destroySoon());
}

const TOO_LARGE = Symbol('too large');

/** Reads a JSON body of at most MAX_REQUEST_BYTES; stops reading (and leaves the socket to `refuse`) once over. */
function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolvePromise, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_REQUEST_BYTES) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData);
      req.pause();
      resolvePromise(TOO_LARGE);
    };
    req.on('data', onData);
    req.once('error', reject);
    req.once('end', () => {
      if (size > MAX_REQUEST_BYTES) return;
      if (chunks.length === 0) return resolvePromise({});
      try {
        resolvePromise(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(new InvalidRequest('registry: invalid request: body is not JSON'));
      }
    });
  });
}
