/**
 * Routes in isolate memory. A lookup uses what the isolate holds while it is fresh (`freshMs`, 1 s by
 * default); after that it asks the host's shard again, telling it the version it holds, and keeps the
 * answer. A route change therefore reaches every isolate within `freshMs` of its shard applying it, while a
 * busy isolate asks each shard at most about once per host per second. Misses are cached the same way, in
 * a bounded LRU, so a flood of random hosts costs at most one shard round trip per host and cannot grow
 * the isolate's memory.
 */
import { LRUCache } from 'lru-cache';
import type { RouteRecord } from '../protocol/types.js';
import { type Lookup, shardOfHost } from './feed.js';
import type { DurableObjectNamespace } from './workers-types.js';

interface Entry {
  route: RouteRecord | null;
  version: number;
  checkedAt: number;
}

export class RouteCache {
  private readonly entries = new LRUCache<string, Entry>({ max: 10_000 });

  constructor(
    private readonly ns: DurableObjectNamespace,
    private readonly shards: number,
    private readonly freshMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** The route for `host`, from memory when fresh, else from its shard. */
  async get(host: string): Promise<RouteRecord | null> {
    const held = this.entries.get(host);
    const now = this.now();
    if (held && now - held.checkedAt < this.freshMs) return held.route;
    const shard = this.ns.get(this.ns.idFromName(`routes-${shardOfHost(host, this.shards)}`));
    const res = await shard.fetch(`https://shard/lookup?host=${encodeURIComponent(host)}&have=${held?.version ?? -1}`);
    if (!res.ok) {
      // The shard is unreachable: serve what the isolate held rather than nothing.
      if (held) return held.route;
      throw new Error(`route shard answered ${res.status}`);
    }
    const answer = (await res.json()) as Lookup;
    this.entries.set(host, { route: answer.route, version: answer.version, checkedAt: now });
    return answer.route;
  }

  /** What `get` last returned for `host`, without asking anyone (the engine's synchronous resolve). */
  peek(host: string): RouteRecord | null {
    return this.entries.get(host)?.route ?? null;
  }
}
