/**
 * The few Cloudflare Workers types this project uses, declared here instead of pulling in
 * @cloudflare/workers-types (whose globals would clash with Node's in one TypeScript project).
 */

export interface DurableObjectStorage {
  get<T>(key: string): Promise<T | undefined>;
  list<T>(options?: { prefix?: string }): Promise<Map<string, T>>;
  put(entries: Record<string, unknown>): Promise<void>;
  delete(keys: string[]): Promise<number>;
  deleteAll(): Promise<void>;
}

export interface DurableObjectState {
  storage: DurableObjectStorage;
  blockConcurrencyWhile<T>(fn: () => Promise<T>): Promise<T>;
}

export interface DurableObjectStub {
  fetch(input: string | Request, init?: RequestInit): Promise<Response>;
}

export interface DurableObjectNamespace {
  idFromName(name: string): unknown;
  get(id: unknown): DurableObjectStub;
}

/** The Worker's bindings (wrangler.toml [vars], secrets and the Durable Object namespace). */
export interface EdgeEnv {
  ROUTES: DurableObjectNamespace;
  /** Comma-separated origins: the Node gateways the edge forwards to (`https://gw1.example.net`). */
  ORIGINS: string;
  /** Secret presented to the origins in x-allegra-edge (their `edgeTokenFile`). */
  EDGE_TOKEN: string;
  /** Secret the bridge presents to the feed endpoint. */
  FEED_TOKEN: string;
  /** Number of route shards (default 4). Changing it needs a full feed (restart the bridge). */
  SHARDS?: string;
  /** Attempts one request may make in all, below the platform's subrequest limit (default 3). */
  MAX_ATTEMPTS?: string;
  /** How long an isolate uses a route before checking its shard's version again, in ms (default 1000). */
  ROUTE_FRESH_MS?: string;
}
