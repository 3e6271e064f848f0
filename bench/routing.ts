/**
 * Gateway routing hot path: host → route lookups (exact and wildcard) for 1k and 100k routes, the memory
 * a route table takes for 10k and 100k routes, and replica pick cost.
 *
 *   node dist/bench/routing.js [--quick]
 */
import { Balancer } from '../router/balancer.js';
import { RouteTable } from '../router/route-table.js';
import { type BenchOptions, fmt, fmtBytes, forceGc, isMain, markdownTable, memoryCost, nsPerOp, parseArgs } from './lib/microbench.js';

/** Roughly the shape of a gateway route record. */
interface Route {
  host: string;
  instanceId: string;
}

const exactHost = (i: number) => `app-${i}.apps.allegra.example`;
const wildcardPattern = (i: number) => `*.tenant-${i}.example.com`;
/** A host matched by wildcardPattern(i) only. */
const wildcardHost = (i: number, label: number) => `u${label}.tenant-${i}.example.com`;
/** Wildcards with `*` elsewhere than first go to the trie; a host matched by innerPattern(i) only. */
const innerPattern = (i: number) => `api.*.zone-${i}.example.org`;
const innerHost = (i: number, label: number) => `api.r${label}.zone-${i}.example.org`;

/** Half exact hosts, half `*.x` wildcards, and 1% wildcards with an inner `*`. */
function buildTable(routes: number, cacheSize?: number): RouteTable<Route> {
  const table = new RouteTable<Route>({ cacheSize });
  for (let i = 0; i < routes / 2; i++) {
    table.set(exactHost(i), { host: exactHost(i), instanceId: `inst-${i}` });
    table.set(wildcardPattern(i), { host: wildcardPattern(i), instanceId: `inst-w${i}` });
  }
  for (let i = 0; i < routes / 100; i++) table.set(innerPattern(i), { host: innerPattern(i), instanceId: `inst-i${i}` });
  return table;
}

function lookupRows(routes: number, opts: BenchOptions): string[][] {
  const timing = { minMs: opts.quick ? 10 : 15, rounds: opts.quick ? 3 : 7 };
  const half = routes / 2;
  const inner = routes / 100;
  const exactHosts = Array.from({ length: Math.min(half, 50_000) }, (_, i) => exactHost((i * 7919) % half));
  const hotHosts = Array.from({ length: 1000 }, (_, i) => wildcardHost((i * 7919) % half, i));
  const manyHosts = Array.from({ length: 50_000 }, (_, i) => wildcardHost((i * 7919) % half, i));
  // 1k distinct hosts fit in the LRU; 50k do not, so nearly every lookup walks the trie and inserts.
  const innerHot = Array.from({ length: 1000 }, (_, i) => innerHost((i * 7919) % inner, i));
  const innerMany = Array.from({ length: 50_000 }, (_, i) => innerHost((i * 7919) % inner, i));
  const missHosts = Array.from({ length: 1000 }, (_, i) => `nobody-${i}.unknown.example.net`);

  const cached = buildTable(routes);
  const uncached = buildTable(routes, 0);
  const rows: string[][] = [];
  const row = (kind: string, hosts: string[], table: RouteTable<Route>) => {
    // A first pass flattens and hashes the host strings (V8 caches a string's hash), as the gateway's
    // first use of a Host header would, and fills the cache.
    for (const host of hosts) if (table.get(host) === undefined && hosts !== missHosts) throw new Error(`no route for ${host}`);
    forceGc();
    const ns = nsPerOp((i) => table.get(hosts[i % hosts.length] as string), timing);
    rows.push([routes.toLocaleString('en-US'), kind, fmt(ns, 0)]);
  };
  row('exact', exactHosts, cached);
  row('`*.x` wildcard, 1k hosts', hotHosts, cached);
  row('`*.x` wildcard, 50k hosts', manyHosts, cached);
  row('inner `*` wildcard, 1k hosts (LRU hit)', innerHot, cached);
  row('inner `*` wildcard, 50k hosts (LRU miss + insert)', innerMany, cached);
  row('inner `*` wildcard, 1k hosts, no LRU (trie walk)', innerHot, uncached);
  row('no match', missHosts, cached);
  return rows;
}

function memoryRows(routes: number, wildcard: boolean): string[] {
  const hostOf = wildcard ? wildcardPattern : exactHost;
  // Everything: the table plus its host strings and a small route value per host.
  const total = memoryCost(() => {
    const table = new RouteTable<Route>();
    for (let i = 0; i < routes; i++) {
      const host = hostOf(i);
      table.set(host, { host, instanceId: `inst-${i}` });
    }
    return table;
  });
  // The table alone: hosts and values exist anyway (the registry mirror holds them), so allocate them first.
  const hosts = Array.from({ length: routes }, (_, i) => hostOf(i));
  const values = hosts.map((host, i) => ({ host, instanceId: `inst-${i}` }));
  const tableOnly = memoryCost(() => {
    const table = new RouteTable<Route>();
    for (let i = 0; i < routes; i++) table.set(hosts[i] as string, values[i] as Route);
    return table;
  });
  // Keep everything alive until after the measurements.
  if (total.result.size !== routes || tableOnly.result.size !== routes || values.length !== routes) throw new Error('route count mismatch');
  return [
    routes.toLocaleString('en-US'),
    wildcard ? '`*.x` wildcard' : 'exact',
    `${fmtBytes(tableOnly.heapBytes)} (${fmt(tableOnly.heapBytes / routes, 0)} B/route)`,
    `${fmtBytes(total.heapBytes)} (${fmt(total.heapBytes / routes, 0)} B/route)`,
    fmtBytes(Math.max(0, total.rssBytes)),
  ];
}

function pickRows(opts: BenchOptions): string[][] {
  const timing = { minMs: opts.quick ? 10 : 15, rounds: opts.quick ? 3 : 7 };
  const rows: string[][] = [];
  for (const n of [3, 10, 100]) {
    const balancer = new Balancer<{ id: string; weight?: number }>();
    balancer.setEndpoints(Array.from({ length: n }, (_, i) => ({ id: `replica-${i}` })));
    // Some in-flight load and latency history, as on a live gateway.
    for (let i = 0; i < n; i++) {
      balancer.onStart(`replica-${i}`);
      balancer.onEnd(`replica-${i}`, 5 + (i % 7), true);
      if (i % 3 === 0) balancer.onStart(`replica-${i}`);
    }
    const ids = Array.from({ length: 1024 }, (_, i) => `session-${i}`);
    rows.push([
      String(n),
      'pick()',
      fmt(
        nsPerOp(() => balancer.pick(), timing),
        0,
      ),
    ]);
    rows.push([
      String(n),
      'pick() + onStart + onEnd',
      fmt(
        nsPerOp(() => requestCycle(balancer), timing),
        0,
      ),
    ]);
    rows.push([
      String(n),
      'pickSticky(key)',
      fmt(
        nsPerOp((i) => balancer.pickSticky(ids[i & 1023] as string), timing),
        0,
      ),
    ]);
  }
  return rows;
}

function requestCycle(balancer: Balancer<{ id: string }>): unknown {
  const endpoint = balancer.pick();
  if (endpoint === undefined) return undefined;
  balancer.onStart(endpoint.id);
  balancer.onEnd(endpoint.id, 5, true);
  return endpoint;
}

export async function main(opts: BenchOptions): Promise<string> {
  const out: string[] = [];
  out.push(`## Routing: host → route${opts.quick ? ' (quick)' : ''}`);
  out.push('');
  out.push(
    'Tables hold half exact hosts (`app-N.apps.allegra.example`), half `*.tenant-N.example.com` wildcards and 1% ' +
      "`api.*.zone-N.example.org` wildcards (the kind that needs the trie). Host strings are pre-hashed (V8 caches a string's hash).",
  );
  out.push('');
  // Memory first, while the heap is small, so RSS growth means something.
  const memory = [memoryRows(10_000, false), memoryRows(10_000, true), memoryRows(100_000, false), memoryRows(100_000, true)];
  const lookups = [...lookupRows(1000, opts), ...lookupRows(100_000, opts)];
  out.push(markdownTable(['routes', 'lookup', 'ns/op'], lookups));
  out.push('');
  out.push(
    'Memory after a forced GC: the table alone (host strings and route values allocated beforehand, as the registry mirror holds them anyway), and the table with its host strings and a small value per route:',
  );
  out.push('');
  out.push(markdownTable(['routes', 'kind', 'table heap', 'table + hosts + values heap', 'RSS growth (total)'], memory));
  out.push('');
  out.push('## Replica balancer');
  out.push('');
  out.push(markdownTable(['replicas', 'operation', 'ns/op'], pickRows(opts)));
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
