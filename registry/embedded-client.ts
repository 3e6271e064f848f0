/**
 * A Registry that talks to the process hosting the embedded store over its Unix socket, presenting a role's
 * token on every request. Watches reconnect by themselves and resume from the last revision they delivered;
 * a refusal (bad credential, no permission) ends them through `onError` instead.
 */
import { Client, type Dispatcher } from 'undici';
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
import { type Denial, isRole, RegistryAccessError, RegistryAuthError, type Role } from '../protocol/roles.js';
import { HeldLeases, KeptLease } from './lease-keeper.js';
import { AUTH_HEADER, bearer } from './wire.js';

/** The error a refused request turns into: the host's message, typed so callers can tell refusals apart. */
async function refusal(res: Dispatcher.ResponseData): Promise<Error> {
  let body: { error?: string; denied?: Denial } = {};
  try {
    body = (await res.body.json()) as typeof body;
  } catch {
    // Not JSON: the status says enough.
  }
  if (res.statusCode === 403 && body.denied) return new RegistryAccessError(body.denied);
  if (res.statusCode === 401) return new RegistryAuthError(body.error?.replace(/^registry: unauthenticated: /, '') ?? 'refused');
  return new Error(body.error ?? `registry: status ${res.statusCode}`);
}

export class EmbeddedClient implements Registry {
  private readonly client: Client;
  private readonly leases = new HeldLeases();
  private readonly watches = new Set<{ close(): void }>();
  private closed = false;

  private readonly authorization: string;

  constructor(
    readonly socketPath: string,
    token: string,
  ) {
    this.authorization = bearer(token);
    this.client = new Client('http://registry', { socketPath, connect: { timeout: 2_000 }, headersTimeout: 10_000, bodyTimeout: 10_000 });
  }

  private async call<T>(path: string, body: unknown): Promise<T> {
    const res = await this.client.request({
      method: 'POST',
      path,
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json', [AUTH_HEADER]: this.authorization },
    });
    if (res.statusCode !== 200) throw await refusal(res);
    return (await res.body.json()) as T;
  }

  /** The role the host knows this client's token as; rejects if the token is refused or nobody hosts. */
  async whoami(): Promise<Role> {
    const res = await this.client.request({ method: 'GET', path: '/v1/whoami', headers: { [AUTH_HEADER]: this.authorization } });
    if (res.statusCode !== 200) throw await refusal(res);
    const { role } = (await res.body.json()) as { role?: unknown };
    if (!isRole(role)) throw new Error('registry: the host answered whoami without a role');
    return role;
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const { kv } = await this.call<{ kv: KeyValue | null }>('/v1/get', { key });
    return kv ?? undefined;
  }
  list(prefix: string): Promise<RangeResult> {
    return this.call<RangeResult>('/v1/list', { prefix });
  }
  async put(key: string, value: string, opts: { lease?: string } = {}): Promise<number> {
    const op = opts.lease ? { type: 'put', key, value, lease: opts.lease } : { type: 'put', key, value };
    const res = await this.txn({ compare: [], success: [op as TxnRequest['success'][number]] });
    return res.revision;
  }
  async delete(key: string): Promise<boolean> {
    // "absent" compare fails when the key exists, so the failure branch deletes it and reports existence.
    const res = await this.txn({ compare: [{ key, target: 'version', equals: 0 }], success: [], failure: [{ type: 'delete', key }] });
    return !res.succeeded;
  }
  txn(request: TxnRequest): Promise<TxnResult> {
    return this.call<TxnResult>('/v1/txn', request);
  }

  async grantLease(ttlMs: number): Promise<Lease> {
    const { id } = await this.call<{ id: string }>('/v1/lease/grant', { ttlMs });
    const lease = new KeptLease(id, ttlMs, {
      keepAlive: async (leaseId) => (await this.call<{ ok: boolean }>('/v1/lease/keepalive', { id: leaseId })).ok,
      revoke: async (leaseId) => {
        await this.call('/v1/lease/revoke', { id: leaseId });
      },
    });
    return this.leases.add(lease);
  }

  watch(prefix: string, onEvents: (events: WatchEvent[]) => void, opts: WatchOptions = {}): Watch {
    let next = opts.fromRevision;
    let stopped = false;
    let abort = new AbortController();
    let retryDelay = 100;
    // Each watch is a never-ending response: it gets a connection of its own so that nothing queues behind it.
    const watchClient = new Client('http://registry', { socketPath: this.socketPath, headersTimeout: 10_000, bodyTimeout: 0 });

    const runOnce = async (): Promise<void> => {
      const query = new URLSearchParams({ prefix });
      if (next !== undefined) query.set('from', String(next));
      const res = await watchClient.request({
        method: 'GET',
        path: `/v1/watch?${query}`,
        signal: abort.signal,
        headers: { [AUTH_HEADER]: this.authorization },
      });
      if (res.statusCode === 401 || res.statusCode === 403) throw new Refused(await refusal(res));
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new Error(`registry: watch answered ${res.statusCode}`);
      }
      let buffered = '';
      let idle: NodeJS.Timeout | undefined;
      const armIdle = () => {
        clearTimeout(idle);
        // The server sends a heartbeat every 2 s: silence for longer means the connection is dead.
        idle = setTimeout(() => res.body.destroy(new Error('watch heartbeat lost')), 6_000);
      };
      armIdle();
      try {
        for await (const chunk of res.body) {
          armIdle();
          retryDelay = 100;
          buffered += (chunk as Buffer).toString('utf8');
          let nl = buffered.indexOf('\n');
          while (nl >= 0) {
            const line = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 1);
            nl = buffered.indexOf('\n');
            const msg = JSON.parse(line) as { revision?: number; events?: WatchEvent[]; compacted?: number };
            if (msg.revision !== undefined && next === undefined) next = msg.revision + 1;
            if (msg.events && msg.events.length > 0) {
              next = (msg.events[msg.events.length - 1] as WatchEvent).modRevision + 1;
              if (!stopped) onEvents(msg.events);
            }
            if (msg.compacted !== undefined) {
              next = msg.compacted + 1;
              if (!stopped) opts.onCompacted?.(msg.compacted);
            }
          }
        }
      } finally {
        clearTimeout(idle);
      }
    };

    const loop = async () => {
      while (!stopped && !this.closed) {
        try {
          await runOnce();
        } catch (err) {
          if (err instanceof Refused) {
            // Retrying cannot help: the host said no. The watch ends here.
            if (!stopped) opts.onError?.(err.reason);
            handle.close();
            break;
          }
          // Registry unreachable or stream broken: retry with backoff and resume from `next`.
        }
        if (stopped || this.closed) break;
        await new Promise((r) => setTimeout(r, retryDelay).unref());
        retryDelay = Math.min(retryDelay * 2, 2_000);
        abort = new AbortController();
      }
    };
    const handle = {
      close: () => {
        stopped = true;
        abort.abort();
        void watchClient.destroy().catch(() => {});
        this.watches.delete(handle);
      },
    };
    this.watches.add(handle);
    void loop();
    return handle;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.leases.stopAll();
    for (const w of [...this.watches]) w.close();
    await this.client.close().catch(() => {});
  }
}

/** A watch the host refused: not retried. */
class Refused extends Error {
  constructor(readonly reason: Error) {
    super(reason.message);
  }
}
