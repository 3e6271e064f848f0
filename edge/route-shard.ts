/**
 * One shard of the route table, as a Durable Object: the routes of its sites (edge/feed.ts), in a RouteTable
 * (router/route-table.ts: exact hosts and wildcards resolved as on the Node gateways), kept in the object's
 * storage so a restarted object answers at once, and a version that changes with every batch applied.
 * Durable Objects are single-threaded per id: a lookup never sees half a batch. Workers KV alone was not an
 * option: it is eventually consistent over ~60 s, and a route change must reach the edge within seconds.
 */
import type { RouteRecord } from '../protocol/types.js';
import { RouteTable } from '../router/route-table.js';
import type { FeedBatch, Lookup } from './feed.js';
import type { DurableObjectState } from './workers-types.js';

const ROUTE_PREFIX = 'r:';

export class RouteShard {
  private readonly routes = new Map<string, RouteRecord>();
  private readonly table = new RouteTable<RouteRecord>();
  private version = 0;

  constructor(private readonly state: DurableObjectState) {
    void state.blockConcurrencyWhile(async () => {
      this.version = (await state.storage.get<number>('version')) ?? 0;
      for (const [key, route] of await state.storage.list<RouteRecord>({ prefix: ROUTE_PREFIX })) {
        this.routes.set(key.slice(ROUTE_PREFIX.length), route);
        this.table.set(route.host, route);
      }
    });
  }

  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === '/lookup') {
      const host = url.searchParams.get('host') ?? '';
      const answer: Lookup = { version: this.version, route: this.table.get(host) ?? null };
      return Response.json(answer);
    }
    if (url.pathname === '/apply' && request.method === 'POST') {
      await this.apply((await request.json()) as FeedBatch);
      return Response.json({ version: this.version, routes: this.routes.size });
    }
    return new Response('not found\n', { status: 404 });
  }

  private async apply(batch: FeedBatch): Promise<void> {
    const removed: string[] = [];
    if (batch.full) {
      const keep = new Set(batch.put.map((r) => r.host));
      for (const host of this.routes.keys()) if (!keep.has(host)) removed.push(host);
    }
    removed.push(...batch.delete);
    for (const host of removed) {
      this.routes.delete(host);
      this.table.delete(host);
    }
    for (const r of batch.put) {
      this.routes.set(r.host, r);
      this.table.set(r.host, r);
    }
    this.version = batch.version;
    // Storage takes at most 128 keys per call.
    const keys = removed.map((h) => `${ROUTE_PREFIX}${h}`);
    for (let i = 0; i < keys.length; i += 128) await this.state.storage.delete(keys.slice(i, i + 128));
    for (let i = 0; i < batch.put.length; i += 127) {
      const puts: Record<string, unknown> = {};
      for (const r of batch.put.slice(i, i + 127)) puts[`${ROUTE_PREFIX}${r.host}`] = r;
      await this.state.storage.put(puts);
    }
    await this.state.storage.put({ version: batch.version });
  }
}
