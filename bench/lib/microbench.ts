/**
 * Small helpers shared by the microbenchmarks (bench/hashing.ts, bench/routing.ts): time-bounded
 * ns/op measurement, heap measurement with a forced GC, markdown tables, and the "run when executed
 * directly" check.
 */
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export interface BenchOptions {
  quick: boolean;
}

/** True when the module at `metaUrl` is the script node was started with. */
export function isMain(metaUrl: string): boolean {
  const script = process.argv[1];
  return script !== undefined && metaUrl === pathToFileURL(script).href;
}

export function parseArgs(argv: readonly string[] = process.argv.slice(2)): BenchOptions {
  return { quick: argv.includes('--quick') };
}

/** Keeps results observable so the JIT cannot drop the measured work. */
let sink = 0;
export function consume(value: unknown): void {
  if (typeof value === 'string') sink ^= value.length;
  else if (typeof value === 'number') sink ^= value | 0;
  else if (value !== undefined && value !== null) sink ^= 1;
}
export function sinkValue(): number {
  return sink;
}

/**
 * Nanoseconds per call of `op(i)` for i = 0, 1, 2…: warms up, then runs batches of `batch` calls until
 * `minMs` have elapsed, `rounds` times, and returns the fastest round (the one least disturbed by other
 * work on a shared machine).
 */
export function nsPerOp(op: (i: number) => unknown, opts: { minMs?: number; batch?: number; rounds?: number } = {}): number {
  const minMs = opts.minMs ?? 100;
  const batch = opts.batch ?? 10_000;
  const rounds = opts.rounds ?? 3;
  let i = 0;
  for (let w = 0; w < batch; w++) consume(op(i++));
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < rounds; r++) {
    let calls = 0;
    const start = process.hrtime.bigint();
    let elapsedNs = 0;
    do {
      for (let b = 0; b < batch; b++) consume(op(i++));
      calls += batch;
      elapsedNs = Number(process.hrtime.bigint() - start);
    } while (elapsedNs < minMs * 1e6);
    best = Math.min(best, elapsedNs / calls);
  }
  return best;
}

/** Milliseconds taken by `fn` (best of `rounds`), with its last result. */
export function timeMs<R>(fn: () => R, rounds = 1): { ms: number; result: R } {
  let best = Number.POSITIVE_INFINITY;
  let result: R | undefined;
  for (let r = 0; r < rounds; r++) {
    const start = process.hrtime.bigint();
    result = fn();
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e6);
  }
  return { ms: best, result: result as R };
}

let gcFunction: (() => void) | undefined;
/** A working gc(), even when node was started without --expose-gc. */
export function forceGc(): void {
  if (!gcFunction) {
    const exposed = (globalThis as { gc?: () => void }).gc;
    if (exposed) gcFunction = exposed;
    else {
      setFlagsFromString('--expose-gc');
      gcFunction = runInNewContext('gc') as () => void;
    }
  }
  gcFunction();
  gcFunction();
}

export interface MemoryCost<R> {
  heapBytes: number;
  rssBytes: number;
  result: R;
}

/** Heap and RSS growth caused by what `build` returns (kept alive across the second measurement). */
export function memoryCost<R>(build: () => R): MemoryCost<R> {
  forceGc();
  const before = process.memoryUsage();
  const result = build();
  forceGc();
  const after = process.memoryUsage();
  return { heapBytes: after.heapUsed - before.heapUsed, rssBytes: after.rss - before.rss, result };
}

export function markdownTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

export function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return String(x);
  return x.toFixed(digits);
}

export function fmtBytes(bytes: number): string {
  const mib = bytes / (1024 * 1024);
  return mib >= 1 ? `${mib.toFixed(1)} MiB` : `${(bytes / 1024).toFixed(0)} KiB`;
}

/** Deterministic pseudo-random numbers (mulberry32) so benchmark inputs are the same on every run. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates shuffle into a new array. */
export function shuffle<T>(list: readonly T[], random: () => number): T[] {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}
