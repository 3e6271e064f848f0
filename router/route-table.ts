/**
 * Host → route lookup with exact and wildcard hosts. Hosts arrive lower-cased, without port.
 *
 * - A `*` label matches exactly one non-empty label: `*.example.com` matches `a.example.com`, not
 *   `example.com` nor `a.b.example.com`. `*` may stand for any label (`api.*.example.com`).
 * - An exact host beats every wildcard. Among wildcards the most specific wins, comparing labels from the
 *   right (as DNS reads them): at the first label where one pattern has a literal and the other `*`, the
 *   literal wins, so `*.eu.example.com` beats `api.*.example.com` for `api.eu.example.com`.
 *
 * Three stores, searched in this order:
 * 1. exact hosts, a Map;
 * 2. wildcards whose only `*` is the first label (`*.example.com`, the usual kind), a Map keyed by the
 *    rest (`example.com`): one slice and one Map lookup. When one matches it is the most specific match,
 *    since every other matching wildcard has a `*` further right where this one has a literal;
 * 3. all other wildcards, in a trie of labels read from the right, searched literal-first with
 *    backtracking (which yields the most specific match first). Walks are memoised, misses included, in
 *    an LRU cache. A value change is seen by cached lookups at once (the cache holds the trie node);
 *    adding or removing a trie wildcard bumps a generation number that turns older cache entries into
 *    misses, in O(1), without clearing anything.
 * Every update is O(labels); lookups never wait for a rebuild.
 */
import { LRUCache } from 'lru-cache';

export interface RouteTableOptions {
  /** Most resolved wildcard lookups remembered. Default 10 000; 0 disables the cache. */
  cacheSize?: number;
}

const DEFAULT_CACHE_SIZE = 10_000;

class WildcardNode<T> {
  /** Literal labels; created on first use, since most nodes are leaves. */
  children: Map<string, WildcardNode<T>> | undefined;
  star: WildcardNode<T> | undefined;
  hasValue = false;
  value: T | undefined;
}

interface CachedMatch<T> {
  generation: number;
  /** Matched trie node, or undefined for "no wildcard matches". */
  node: WildcardNode<T> | undefined;
}

export class RouteTable<T> {
  private readonly exact = new Map<string, T>();
  /** `*.rest` patterns keyed by `rest`. */
  private readonly leading = new Map<string, T>();
  /** Every other wildcard pattern. */
  private readonly wildcards = new WildcardNode<T>();
  private trieCount = 0;
  /** Incremented whenever a wildcard is added or removed; cache entries from older generations are stale. */
  private generation = 0;
  private readonly cache: LRUCache<string, CachedMatch<T>> | undefined;

  constructor(opts: RouteTableOptions = {}) {
    const cacheSize = opts.cacheSize ?? DEFAULT_CACHE_SIZE;
    this.cache = cacheSize > 0 ? new LRUCache<string, CachedMatch<T>>({ max: cacheSize }) : undefined;
  }

  set(host: string, value: T): void {
    const kind = patternKind(host);
    if (kind === EXACT) this.exact.set(host, value);
    else if (kind === LEADING) this.leading.set(host.slice(2), value);
    else {
      let node = this.wildcards;
      for (const label of labelsFromRight(host)) node = childFor(node, label);
      if (!node.hasValue) {
        node.hasValue = true;
        this.trieCount++;
        this.generation++;
      }
      node.value = value;
    }
  }

  delete(host: string): boolean {
    const kind = patternKind(host);
    if (kind === EXACT) return this.exact.delete(host);
    if (kind === LEADING) return this.leading.delete(host.slice(2));
    const labels = labelsFromRight(host);
    const path = findPath(this.wildcards, labels);
    const node = path?.[labels.length];
    if (path === undefined || node === undefined || !node.hasValue) return false;
    node.hasValue = false;
    node.value = undefined;
    this.trieCount--;
    this.generation++;
    pruneEmpty(path, labels);
    return true;
  }

  get(host: string): T | undefined {
    const hit = this.exact.get(host);
    if (hit !== undefined) return hit;
    if (this.leading.size > 0) {
      const dot = host.indexOf('.');
      // The first label must be non-empty for `*` to match it.
      if (dot > 0) {
        const wild = this.leading.get(host.slice(dot + 1));
        if (wild !== undefined) return wild;
      }
    }
    return this.trieCount === 0 ? undefined : this.matchTrie(host)?.value;
  }

  has(host: string): boolean {
    const kind = patternKind(host);
    if (kind === EXACT) return this.exact.has(host);
    if (kind === LEADING) return this.leading.has(host.slice(2));
    const labels = labelsFromRight(host);
    return findPath(this.wildcards, labels)?.[labels.length]?.hasValue === true;
  }

  /** Number of routes, exact and wildcard. */
  get size(): number {
    return this.exact.size + this.leading.size + this.trieCount;
  }

  /** Number of wildcard routes. */
  get wildcardSize(): number {
    return this.leading.size + this.trieCount;
  }

  clear(): void {
    this.exact.clear();
    this.leading.clear();
    this.wildcards.children = undefined;
    this.wildcards.star = undefined;
    this.wildcards.hasValue = false;
    this.wildcards.value = undefined;
    this.trieCount = 0;
    this.generation++;
  }

  private matchTrie(host: string): WildcardNode<T> | undefined {
    const cache = this.cache;
    if (cache === undefined) return resolve(this.wildcards, host, host.length);
    const cached = cache.get(host);
    if (cached !== undefined && cached.generation === this.generation) return cached.node;
    const node = resolve(this.wildcards, host, host.length);
    cache.set(host, { generation: this.generation, node });
    return node;
  }
}

const EXACT = 0;
const LEADING = 1;
const OTHER_WILDCARD = 2;

/**
 * EXACT when no label is exactly `*` (a `*` inside a label is a literal character), LEADING when the
 * first label is the only `*`, OTHER_WILDCARD otherwise.
 */
function patternKind(host: string): number {
  if (!host.includes('*')) return EXACT;
  let stars = 0;
  let firstIsStar = false;
  let start = 0;
  for (;;) {
    const dot = host.indexOf('.', start);
    const end = dot < 0 ? host.length : dot;
    if (end - start === 1 && host.charCodeAt(start) === 42 /* '*' */) {
      stars++;
      if (start === 0) firstIsStar = true;
    }
    if (dot < 0) break;
    start = dot + 1;
  }
  if (stars === 0) return EXACT;
  // `*` alone has no rest to key on: the trie handles it.
  return stars === 1 && firstIsStar && host.length > 2 ? LEADING : OTHER_WILDCARD;
}

/** `a.b.com` → ['com', 'b', 'a']: the trie is keyed from the most significant label. */
function labelsFromRight(host: string): string[] {
  return host.split('.').reverse();
}

/** Nodes along `labels` from the root (path[0] is the root), or undefined if the pattern is absent. */
function findPath<T>(root: WildcardNode<T>, labels: string[]): WildcardNode<T>[] | undefined {
  const path = [root];
  let node = root;
  for (const label of labels) {
    const next = label === '*' ? node.star : node.children?.get(label);
    if (next === undefined) return undefined;
    path.push(next);
    node = next;
  }
  return path;
}

function childFor<T>(node: WildcardNode<T>, label: string): WildcardNode<T> {
  if (label === '*') {
    node.star ??= new WildcardNode<T>();
    return node.star;
  }
  node.children ??= new Map();
  let child = node.children.get(label);
  if (!child) {
    child = new WildcardNode<T>();
    node.children.set(label, child);
  }
  return child;
}

/** Removes now-empty nodes bottom-up so deleted routes do not leak memory. */
function pruneEmpty<T>(path: WildcardNode<T>[], labels: string[]): void {
  for (let i = path.length - 1; i > 0; i--) {
    const node = path[i] as WildcardNode<T>;
    if (node.hasValue || node.star || (node.children && node.children.size > 0)) return;
    const parent = path[i - 1] as WildcardNode<T>;
    const label = labels[i - 1] as string;
    if (label === '*') parent.star = undefined;
    else {
      parent.children?.delete(label);
      if (parent.children?.size === 0) parent.children = undefined;
    }
  }
}

/**
 * Most specific wildcard match of the labels host[0..end), read from the right: the literal child first,
 * then `*`, backtracking on failure. `end` is -1 once every label has been consumed.
 */
function resolve<T>(node: WildcardNode<T>, host: string, end: number): WildcardNode<T> | undefined {
  if (end < 0) return node.hasValue ? node : undefined;
  const dot = end === 0 ? -1 : host.lastIndexOf('.', end - 1);
  const label = host.slice(dot + 1, end);
  const literal = node.children?.get(label);
  if (literal !== undefined) {
    const match = resolve(literal, host, dot);
    if (match !== undefined) return match;
  }
  if (node.star !== undefined && label.length > 0) return resolve(node.star, host, dot);
  return undefined;
}
