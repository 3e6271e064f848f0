/**
 * The bridge from the registry to the Workers edge (runs on Node, next to a gateway or anywhere with the
 * gateway role's registry access). It watches `routes/`, the instances and the network config, decides
 * what each route may serve exactly as the Node gateways do (`routeFromGrants`, protocol/grants.ts: only
 * what the instance's owner signed), and sends the edge the changes to that served set (edge/feed.ts):
 * a full table when it starts or after a failed push, only what changed after that, within ~20 ms of a
 * registry change. The edge therefore never verifies a signature itself (CPU time per request is what a
 * Worker is billed and limited by) and trusts the feed by its token.
 */
import type { Logger } from 'pino';
import { routeFromGrants } from '../protocol/grants.js';
import { PREFIX } from '../protocol/keys.js';
import type { Registry } from '../protocol/registry.js';
import { routeRecord } from '../protocol/schemas.js';
import type { InstanceSpec, RouteRecord } from '../protocol/types.js';
import { ClusterView } from '../registry/cluster-view.js';
import { jsonRecord, Mirror } from '../registry/mirror.js';
import { FEED_PATH, type FeedBatch } from './feed.js';

export interface BridgeOptions {
  registry: Registry;
  /** The Worker's base URL (`https://edge.example.net`, or the local workerd's). */
  edgeUrl: string;
  feedToken: string;
  log: Logger;
  /** Changes arriving within this window are sent together. Default 20 ms. */
  debounceMs?: number;
}

export class EdgeBridge {
  private readonly view: ClusterView;
  private readonly routes: Mirror<RouteRecord>;
  /** What the edge holds, by host pattern, as JSON (to tell changes from repeats). */
  private sent = new Map<string, string>();
  private needFull = true;
  private timer: NodeJS.Timeout | null = null;
  private pushing: Promise<void> | null = null;
  private again = false;
  private version = Date.now();
  private stopped = false;

  constructor(private readonly opts: BridgeOptions) {
    this.view = new ClusterView(opts.registry);
    this.routes = new Mirror(opts.registry, PREFIX.routes, jsonRecord(routeRecord));
  }

  async start(): Promise<this> {
    const changed = () => this.schedule();
    this.routes.onChange(changed);
    this.view.instances.onChange(changed);
    this.view.config.onChange(changed);
    await Promise.all([this.view.start(), this.routes.start()]);
    await this.push();
    return this;
  }

  /**
   * Each route record's check, kept while the record, its instance and the base domain are the same
   * objects: a push follows every registry change, and checking every grant's signatures each time would
   * cost the whole table's Ed25519 verifications per change (the Node gateways' routing core caches alike).
   */
  private readonly checked = new WeakMap<RouteRecord, { instance: InstanceSpec | undefined; base: string; route: RouteRecord | null }>();

  /** The routes the edge should serve now: every route whose grants check out, without its grants. */
  private served(): Map<string, RouteRecord> {
    const out = new Map<string, RouteRecord>();
    const base = this.view.network().baseDomain;
    for (const record of this.routes.values()) {
      const instance = this.view.instance(record.instanceName);
      let memo = this.checked.get(record);
      if (!memo || memo.instance !== instance || memo.base !== base) {
        const result = routeFromGrants(record, instance, base);
        const route = typeof result === 'string' ? null : (({ grants: _grants, ...rest }) => rest)(result);
        memo = { instance, base, route };
        this.checked.set(record, memo);
      }
      if (memo.route) out.set(memo.route.host, memo.route);
    }
    return out;
  }

  private schedule(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.push();
    }, this.opts.debounceMs ?? 20);
  }

  /** Sends what changed (or everything); one push at a time, the next one folding in what came meanwhile. */
  private push(): Promise<void> {
    if (this.pushing) {
      this.again = true;
      return this.pushing;
    }
    this.pushing = this.pushOnce()
      .catch((err: Error) => {
        this.needFull = true;
        this.opts.log.warn({ err: err.message }, 'edge feed push failed; retrying with the full table');
        if (!this.stopped) setTimeout(() => this.schedule(), 500).unref();
      })
      .finally(() => {
        this.pushing = null;
        if (this.again) {
          this.again = false;
          this.schedule();
        }
      });
    return this.pushing;
  }

  private async pushOnce(): Promise<void> {
    const served = this.served();
    const now = new Map([...served].map(([host, r]) => [host, JSON.stringify(r)]));
    const full = this.needFull;
    const batch: FeedBatch = { version: ++this.version, full, put: [], delete: [] };
    for (const [host, json] of now) if (full || this.sent.get(host) !== json) batch.put.push(served.get(host) as RouteRecord);
    if (!full) for (const host of this.sent.keys()) if (!now.has(host)) batch.delete.push(host);
    if (!full && batch.put.length === 0 && batch.delete.length === 0) return;
    const res = await fetch(new URL(FEED_PATH, this.opts.edgeUrl), {
      method: 'POST',
      headers: { authorization: `Bearer ${this.opts.feedToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(batch),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`edge feed answered ${res.status}: ${text.trim()}`);
    this.sent = now;
    this.needFull = false;
    this.opts.log.info({ version: batch.version, full, put: batch.put.length, delete: batch.delete.length }, 'edge feed pushed');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.pushing;
    this.view.close();
    this.routes.close();
  }
}
