/**
 * A Registry that talks to the process hosting the embedded store over its Unix socket. Watches
 * reconnect by themselves and resume from the last revision they delivered.
 */
import { Client } from 'undici';
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
import { HeldLeases, KeptLease } from './lease-keeper.js';

export class EmbeddedClient implements Registry {
  private readonly client: Client;
  private readonly leases = new HeldLeases();
  private readonly watches = new Set<{ close(): void }>();
  private closed = false;

  constructor(readonly socketPath: string) {
    this.client = new Client('http://registry', { socketPath, connect: { timeout: 2_000 }, headersTimeout: 10_000, bodyTimeout: 10_000 });
  }

  private async call<T>(path: string, body: unknown): Promise<T> {
    const res = await this.client.request({
      method: 'POST',
      path,
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    });
    const json = (await res.body.json()) as T & { error?: string };
    if (res.statusCode !== 200) throw new Error(`registry: ${json.error ?? `status ${res.statusCode}`}`);
    return json;
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
      const res = await watchClient.request({ method: 'GET', path: `/v1/watch?${query}`, signal: abort.signal });
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
        } catch {
          // Registry unreachable or stream broken: retry with backoff and resume from `next`.
        }
        if (stopped || this.closed) break;
        await new Promise((r) => setTimeout(r, retryDelay).unref());
        retryDelay = Math.min(retryDelay * 2, 2_000);
        abort = new AbortController();
      }
    };
    void loop();
    const handle = {
      close: () => {
        stopped = true;
        abort.abort();
        void watchClient.destroy().catch(() => {});
        this.watches.delete(handle);
      },
    };
    this.watches.add(handle);
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
