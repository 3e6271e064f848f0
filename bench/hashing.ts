/**
 * Instance → quorum placement, compared by the numbers: the project's Placement (consistent hashing with
 * bounded loads) against the `consistent-hash` package, a plain virtual-node ring, Maglev and jump hash.
 *
 *   node dist/bench/hashing.js [--quick]
 *
 * Movement is the fraction of keys whose quorum changes when one quorum leaves (or joins), as a multiple
 * of the ideal 1/N (1/(N+1) for a join), averaged over several leaving/joining quorums. "Collateral" is
 * the part of it that is not forced: keys moved that were neither on the leaving quorum nor onto the
 * joining one. Load is max/avg keys per quorum.
 */
import { createRequire } from 'node:module';
import { fmix32, hash32 } from '../router/hash.js';
import { DEFAULT_VNODES_PER_QUORUM, Placement, type QuorumWeight } from '../router/placement.js';
import { VnodeRing } from '../router/vnode-ring.js';
import {
  type BenchOptions,
  fmt,
  forceGc,
  isMain,
  markdownTable,
  nsPerOp,
  parseArgs,
  seededRandom,
  shuffle,
  timeMs,
} from './lib/microbench.js';

/** A placement algorithm as the benchmark sees it: build from quorums and keys, then look keys up. */
interface Contender {
  name: string;
  /** Whether two builders given the same quorums in any order agree (a requirement for Allegra). */
  deterministic: boolean;
  build(quorums: QuorumWeight[], keys: readonly string[]): Built;
}

interface Built {
  lookup(key: string): string | undefined;
  /** Contenders whose state is not a pure function of the quorum set (random points) mutate in place. */
  leave?(quorumId: string): Built;
  join?(quorum: QuorumWeight): Built;
}

const KEY_SEED = 0x1b873593;

// ---------------------------------------------------------------------------------------------------
// Contenders

const boundedLoads: Contender = {
  name: `Placement (bounded loads, c=1.10, ${DEFAULT_VNODES_PER_QUORUM} vnodes)`,
  deterministic: true,
  build(quorums, keys) {
    const placement = new Placement(quorums, keys);
    return { lookup: (key) => placement.quorumOf(key) };
  },
};

function plainRing(vnodes: number): Contender {
  return {
    name: `plain vnode ring (${vnodes} vnodes)`,
    deterministic: true,
    build(quorums) {
      const ids = quorums.map((q) => q.id).sort();
      const ring = new VnodeRing(ids, new Int32Array(ids.length).fill(vnodes));
      return { lookup: (key) => ids[ring.ownerOf(hash32(key, KEY_SEED))] };
    },
  };
}

interface ConsistentHashRing {
  add(node: string, weight?: number): ConsistentHashRing;
  remove(node: string): ConsistentHashRing;
  get(name: string): string | null;
}
type ConsistentHashCtor = new (opts?: { range?: number; weight?: number; distribution?: string }) => ConsistentHashRing;

const consistentHashPackage: Contender = {
  name: '`consistent-hash` package (40 points/node)',
  // Its control points come from Math.random: two gateways would disagree.
  deterministic: false,
  build(quorums) {
    const ConsistentHash = createRequire(import.meta.url)('consistent-hash') as ConsistentHashCtor;
    // Default options (range 100003, 40 points per node: up to 2500 nodes), as a user would take it.
    const ring = new ConsistentHash();
    for (const q of quorums) ring.add(q.id);
    const built: Built = {
      lookup: (key) => ring.get(key) ?? undefined,
      leave(id) {
        ring.remove(id);
        return built;
      },
      join(q) {
        ring.add(q.id);
        return built;
      },
    };
    return built;
  },
};

/** Maglev (Eisenbud et al., NSDI 2016) with a fixed prime table size, as in the paper. */
function maglev(tableSize: number): Contender {
  return {
    name: `Maglev (table ${tableSize})`,
    deterministic: true,
    build(quorums) {
      const ids = quorums.map((q) => q.id).sort();
      const table = maglevTable(ids, tableSize);
      return { lookup: (key) => ids[table[hash32(key, KEY_SEED) % tableSize] as number] };
    },
  };
}

function maglevTable(ids: readonly string[], size: number): Int32Array {
  const table = new Int32Array(size).fill(-1);
  const n = ids.length;
  if (n === 0) return table;
  const offset = ids.map((id) => hash32(id, 0xdeadbeef) % size);
  const skip = ids.map((id) => (hash32(id, 0xcafebabe) % (size - 1)) + 1);
  const next = new Int32Array(n);
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      let slot = ((offset[i] as number) + (next[i] as number) * (skip[i] as number)) % size;
      while ((table[slot] as number) >= 0) {
        next[i]++;
        slot = ((offset[i] as number) + (next[i] as number) * (skip[i] as number)) % size;
      }
      table[slot] = i;
      next[i]++;
      if (++filled === size) return table;
    }
  }
}

/**
 * Jump consistent hash (Lamping & Veach, 2014) over quorums sorted by id, with a 32-bit generator in
 * place of the 64-bit LCG (JavaScript has no fast 64-bit multiply). Jump only supports removing the
 * last bucket; an arbitrary quorum leaving renumbers every quorum after it.
 */
const jumpHash: Contender = {
  name: 'jump hash (quorums sorted by id)',
  deterministic: true,
  build(quorums) {
    const ids = quorums.map((q) => q.id).sort();
    return { lookup: (key) => ids[jump(hash32(key, KEY_SEED), ids.length)] };
  },
};

/**
 * Jump hash at its best: bucket numbers kept as registry state, a join appends a bucket, and a leave
 * moves the last bucket's quorum into the vacated number (the only way jump supports arbitrary leaves).
 */
const jumpHashAppendOnly: Contender = {
  name: 'jump hash (append-only numbering, swap-remove)',
  deterministic: true,
  build(quorums) {
    const buckets = quorums.map((q) => q.id);
    const built: Built = {
      lookup: (key) => buckets[jump(hash32(key, KEY_SEED), buckets.length)],
      leave(id) {
        const i = buckets.indexOf(id);
        const last = buckets.pop() as string;
        if (i >= 0 && i < buckets.length) buckets[i] = last;
        return built;
      },
      join(q) {
        buckets.push(q.id);
        return built;
      },
    };
    return built;
  },
};

function jump(keyHash: number, buckets: number): number {
  let b = -1;
  let j = 0;
  let state = keyHash;
  while (j < buckets) {
    b = j;
    state = fmix32((state + 0x9e3779b9) | 0);
    j = Math.floor((b + 1) / ((state + 1) / 0x100000000));
  }
  return b;
}

// ---------------------------------------------------------------------------------------------------
// Measurements

function quorumList(n: number, prefix = 'q'): QuorumWeight[] {
  return Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${fmix32(i + 1).toString(36)}`, capacity: 30 }));
}

function instanceIds(m: number): string[] {
  // Instance ids look like registry ids: random base-36 strings.
  const random = seededRandom(42);
  const ids = new Set<string>();
  while (ids.size < m) ids.add(`i-${Math.floor(random() * 36 ** 10).toString(36)}`);
  return [...ids];
}

interface Movement {
  leave: number;
  leaveCollateral: number;
  join: number;
  joinCollateral: number;
}

function assignAll(built: Built, keys: readonly string[]): (string | undefined)[] {
  return keys.map((k) => built.lookup(k));
}

function measureMovement(contender: Contender, quorums: QuorumWeight[], keys: readonly string[], trials: number): Movement {
  const n = quorums.length;
  const m = keys.length;
  const totals: Movement = { leave: 0, leaveCollateral: 0, join: 0, joinCollateral: 0 };
  const leaving = shuffle(quorums, seededRandom(7)).slice(0, trials);
  // Pure contenders are built once; those that mutate in place get a fresh copy per change.
  const shared = contender.build(quorums, keys);
  const sharedBefore = assignAll(shared, keys);
  const fresh = () => (shared.leave ? contender.build(quorums, keys) : shared);
  const before = (built: Built) => (built === shared ? sharedBefore : assignAll(built, keys));
  for (const [t, gone] of leaving.entries()) {
    let built = fresh();
    let base = before(built);
    let after = assignAll(built.leave ? built.leave(gone.id) : contender.build(without(quorums, gone), keys), keys);
    let moved = 0;
    let collateral = 0;
    for (let i = 0; i < m; i++) {
      if (after[i] === base[i]) continue;
      moved++;
      if (base[i] !== gone.id) collateral++;
    }
    totals.leave += moved / (m / n);
    totals.leaveCollateral += collateral / (m / n);

    const newcomer = { id: `joiner-${t}`, capacity: gone.capacity };
    built = fresh();
    base = before(built);
    after = assignAll(built.join ? built.join(newcomer) : contender.build([...quorums, newcomer], keys), keys);
    moved = 0;
    collateral = 0;
    for (let i = 0; i < m; i++) {
      if (after[i] === base[i]) continue;
      moved++;
      if (after[i] !== newcomer.id) collateral++;
    }
    totals.join += moved / (m / (n + 1));
    totals.joinCollateral += collateral / (m / (n + 1));
  }
  const k = leaving.length;
  return {
    leave: totals.leave / k,
    leaveCollateral: totals.leaveCollateral / k,
    join: totals.join / k,
    joinCollateral: totals.joinCollateral / k,
  };
}

function without<T>(list: readonly T[], item: T): T[] {
  return list.filter((x) => x !== item);
}

function maxOverAvg(assignment: readonly (string | undefined)[], quorumCount: number): number {
  const loads = new Map<string, number>();
  for (const q of assignment) if (q !== undefined) loads.set(q, (loads.get(q) ?? 0) + 1);
  return Math.max(...loads.values()) / (assignment.length / quorumCount);
}

function nextPrime(x: number): number {
  for (let p = Math.max(2, Math.ceil(x)); ; p++) {
    let prime = true;
    for (let d = 2; d * d <= p; d++) {
      if (p % d === 0) {
        prime = false;
        break;
      }
    }
    if (prime) return p;
  }
}

export async function main(opts: BenchOptions): Promise<string> {
  const keyCount = opts.quick ? 20_000 : 100_000;
  const keys = instanceIds(keyCount);
  const sizes = [10, 100];
  const trialsFor = (n: number) => (opts.quick ? 3 : Math.min(n, 5));
  const contendersFor = (n: number): Contender[] => [
    boundedLoads,
    consistentHashPackage,
    plainRing(DEFAULT_VNODES_PER_QUORUM),
    plainRing(160),
    // Table size fixed per scenario (≈100 × N, prime) so a join or leave does not resize it.
    maglev(nextPrime(100 * n)),
    jumpHash,
    jumpHashAppendOnly,
  ];

  const out: string[] = [];
  out.push(`## Placement: instance → quorum (${keyCount.toLocaleString('en-US')} instances${opts.quick ? ', quick' : ''})`);
  out.push('');
  out.push(
    'Moved = keys that change quorum when one quorum leaves / joins, as a multiple of the ideal 1/N ' +
      '(mean over several quorums; 1.00 is optimal). Collateral = the unforced part of it. Load = max/avg keys per quorum.',
  );
  out.push('');
  const rows: string[][] = [];
  for (const n of sizes) {
    const quorums = quorumList(n);
    for (const c of contendersFor(n)) {
      const movement = measureMovement(c, quorums, keys, trialsFor(n));
      const load = maxOverAvg(assignAll(c.build(quorums, keys), keys), n);
      rows.push([
        String(n),
        c.name,
        `${fmt(movement.leave)} (${fmt(movement.leaveCollateral)})`,
        `${fmt(movement.join)} (${fmt(movement.joinCollateral)})`,
        fmt(load),
        c.deterministic ? 'yes' : 'no',
      ]);
    }
  }
  out.push(
    markdownTable(['N', 'algorithm', 'moved on leave (collateral)', 'moved on join (collateral)', 'max/avg load', 'deterministic'], rows),
  );
  out.push('');

  // Lookups with 1k quorums (and 100 for reference), plus the cost of building a Placement.
  const lookupRows: string[][] = [];
  const bigN = 1000;
  // Many short rounds, keeping the fastest: robust to bursts of other work on a shared machine.
  const timing = { minMs: opts.quick ? 10 : 15, rounds: opts.quick ? 3 : 7 };
  for (const n of [100, bigN]) {
    const quorums = quorumList(n);
    const unknownKeys = keys.map((k) => `${k}-unknown`);
    for (const c of contendersFor(n)) {
      const built = c.build(quorums, keys);
      // Collect the previous contenders' garbage now rather than during the timing.
      forceGc();
      const ns = nsPerOp((i) => built.lookup(keys[i % keyCount] as string), timing);
      const load = n === bigN ? fmt(maxOverAvg(assignAll(built, keys), n)) : '';
      lookupRows.push([String(n), c.name, fmt(ns, 0), load]);
      if (c === boundedLoads) {
        const nsUnknown = nsPerOp((i) => built.lookup(unknownKeys[i % keyCount] as string), timing);
        lookupRows.push([String(n), `${c.name}, id not known at build`, fmt(nsUnknown, 0), '']);
      }
    }
  }
  out.push(markdownTable(['N', 'algorithm', 'lookup ns/op', `max/avg load (N=${bigN})`], lookupRows));
  out.push('');

  // A quorum set not built before, so the first build pays for the ring; later builds reuse it.
  const buildQuorums = quorumList(bigN, 'cold');
  const cold = timeMs(() => new Placement(buildQuorums, keys));
  const warm = timeMs(() => new Placement(buildQuorums, keys), opts.quick ? 1 : 3);
  const rebuilt = new Placement([...buildQuorums].reverse(), shuffle(keys, seededRandom(3)));
  let same = true;
  for (const k of keys) if (cold.result.quorumOf(k) !== rebuilt.quorumOf(k)) same = false;
  out.push(
    `Placement construction, ${keyCount.toLocaleString('en-US')} instances × ${bigN} quorums: ${fmt(cold.ms, 0)} ms ` +
      `including the ring, ${fmt(warm.ms, 0)} ms when only the instances changed (ring reused). ` +
      `Same assignment from reversed quorums and shuffled instances: ${same ? 'yes' : 'NO'}.`,
  );
  const report = out.join('\n');
  console.log(report);
  return report;
}

if (isMain(import.meta.url)) {
  main(parseArgs()).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
