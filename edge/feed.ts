/**
 * The route feed's wire format and sharding, shared by the bridge (Node) and the Worker.
 *
 * The bridge sends route changes to the Worker's feed endpoint (`POST /_allegra/feed`, bearer token); the
 * Worker splits them by shard and applies each part to that shard's Durable Object. A route lives in the
 * shard of its site — the last two labels of its host pattern — so that a host, and every wildcard that
 * could match it, is answered by one shard (`*.tenant.example.com` and `app.tenant.example.com` share
 * `example.com`). Patterns with a wildcard among their last two labels go to every shard.
 */
import type { RouteRecord } from '../protocol/types.js';

export const FEED_PATH = '/_allegra/feed';

/** One batch of changes. `full`: the batch is the whole table (the shard drops what it does not list). */
export interface FeedBatch {
  /** Monotonic per bridge run; a shard's answers carry the version it holds. */
  version: number;
  full: boolean;
  /** Routes whose grants the bridge checked (protocol/grants.ts `routeFromGrants`): served as they are. */
  put: RouteRecord[];
  /** Host patterns no longer served. */
  delete: string[];
}

/** What a shard answers for one host. */
export interface Lookup {
  version: number;
  route: RouteRecord | null;
}

/** FNV-1a over the site labels; stable across runtimes. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The site of a host or host pattern: its last two labels. */
export function siteOf(host: string): string {
  const labels = host.split('.');
  return labels.slice(-2).join('.');
}

/** The shards a host pattern belongs to (all of them when its site is a wildcard). */
export function shardsOf(pattern: string, shards: number): number[] {
  const site = siteOf(pattern);
  if (site.split('.').includes('*')) return Array.from({ length: shards }, (_, i) => i);
  return [fnv1a(site) % shards];
}

/** The shard that answers for a host. */
export function shardOfHost(host: string, shards: number): number {
  return fnv1a(siteOf(host)) % shards;
}

/** Splits a batch into one per shard; a full batch reaches every shard, so each drops what it lost. */
export function splitBatch(batch: FeedBatch, shards: number): Map<number, FeedBatch> {
  const out = new Map<number, FeedBatch>();
  const part = (i: number) => {
    let b = out.get(i);
    if (!b) out.set(i, (b = { version: batch.version, full: batch.full, put: [], delete: [] }));
    return b;
  };
  if (batch.full) for (let i = 0; i < shards; i++) part(i);
  for (const r of batch.put) for (const i of shardsOf(r.host, shards)) part(i).put.push(r);
  for (const h of batch.delete) for (const i of shardsOf(h, shards)) part(i).delete.push(h);
  return out;
}
