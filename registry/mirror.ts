/**
 * An in-memory copy of one registry prefix, kept current by a watch: list once, then apply events.
 * Readers (the gateway's route table, the agent's reconciler) never touch the registry per request.
 * If the watch history was compacted, the mirror re-lists and reports the difference as changes.
 */
import type { Registry, Watch, WatchEvent } from '../protocol/registry.js';

export type MirrorChange<T> = { key: string; value: T | undefined; previous: T | undefined };

export class Mirror<T> {
  private readonly items = new Map<string, T>();
  private watchHandle: Watch | null = null;
  private readonly listeners: Array<(changes: MirrorChange<T>[]) => void> = [];
  private closed = false;

  constructor(
    private readonly registry: Registry,
    readonly prefix: string,
    /** Returns undefined for a record that does not parse: it is treated as absent. */
    private readonly parse: (raw: string, key: string) => T | undefined,
  ) {}

  /** Loads the prefix and starts watching; resolves once the mirror holds the current state. */
  async start(): Promise<this> {
    const revision = await this.resync();
    this.watchFrom(revision + 1);
    return this;
  }

  private async resync(): Promise<number> {
    const { items, revision } = await this.registry.list(this.prefix);
    const fresh = new Map<string, T>();
    for (const kv of items) {
      const value = this.parse(kv.value, kv.key);
      if (value !== undefined) fresh.set(kv.key, value);
    }
    const changes: MirrorChange<T>[] = [];
    for (const [key, previous] of this.items) if (!fresh.has(key)) changes.push({ key, value: undefined, previous });
    for (const [key, value] of fresh) changes.push({ key, value, previous: this.items.get(key) });
    this.items.clear();
    for (const [k, v] of fresh) this.items.set(k, v);
    this.emit(changes);
    return revision;
  }

  private watchFrom(fromRevision: number): void {
    if (this.closed) return;
    this.watchHandle = this.registry.watch(this.prefix, (events) => this.apply(events), {
      fromRevision,
      onCompacted: () => {
        this.watchHandle?.close();
        void this.resync().then(
          (rev) => this.watchFrom(rev + 1),
          () => setTimeout(() => this.watchFrom(fromRevision), 500).unref(),
        );
      },
    });
  }

  private apply(events: WatchEvent[]): void {
    const changes: MirrorChange<T>[] = [];
    for (const e of events) {
      const previous = this.items.get(e.key);
      const value = e.type === 'put' && e.value !== undefined ? this.parse(e.value, e.key) : undefined;
      if (value === undefined) this.items.delete(e.key);
      else this.items.set(e.key, value);
      if (previous !== undefined || value !== undefined) changes.push({ key: e.key, value, previous });
    }
    this.emit(changes);
  }

  private emit(changes: MirrorChange<T>[]): void {
    if (changes.length === 0) return;
    for (const l of this.listeners) l(changes);
  }

  onChange(listener: (changes: MirrorChange<T>[]) => void): void {
    this.listeners.push(listener);
  }

  get(key: string): T | undefined {
    return this.items.get(key);
  }

  values(): IterableIterator<T> {
    return this.items.values();
  }

  entries(): IterableIterator<[string, T]> {
    return this.items.entries();
  }

  get size(): number {
    return this.items.size;
  }

  close(): void {
    this.closed = true;
    this.watchHandle?.close();
  }
}

/** Builds a parser for JSON records validated by a schema-like `safeParse`. */
export function jsonRecord<T>(schema: {
  safeParse(v: unknown): { success: true; data: T } | { success: false };
}): (raw: string) => T | undefined {
  return (raw) => {
    try {
      const r = schema.safeParse(JSON.parse(raw));
      return r.success ? r.data : undefined;
    } catch {
      return undefined;
    }
  };
}
