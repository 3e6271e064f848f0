/**
 * Registry round trips as a role client sees them: sequential puts (each fsynced by the embedded host's log,
 * or committed by etcd's raft) and gets, against the embedded registry (socket client with its role's token,
 * every request checked against the role table and validated) beside etcd 3.4 (one member on tmpfs) with and
 * without auth enabled by `allegra registry setup-auth`. Prints a Markdown section.
 * Run: `npm run build && node dist/bench/registry.js [--quick]`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Registry } from '../protocol/registry.js';
import { EmbeddedHost } from '../registry/embedded.js';
import { EtcdRegistry } from '../registry/etcd.js';
import { readEtcdCredentials } from '../registry/etcd-credentials.js';
import { openRegistry } from '../registry/open.js';
import { startEtcdCluster } from '../test/helpers/etcd-cluster.js';

interface Row {
  target: string;
  put: number[];
  get: number[];
}

async function time(n: number, op: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await op(i);
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return out;
}

async function measure(target: string, registry: Registry, n: number): Promise<Row> {
  const value = JSON.stringify({ endpoint: 'http://127.0.0.1:40000', healthy: true, version: 3, pad: 'x'.repeat(200) });
  await time(Math.min(100, n), (i) => registry.put(`replicas/warm/${i}`, value));
  const put = await time(n, (i) => registry.put(`replicas/bench/${i % 100}`, value));
  const get = await time(n, (i) => registry.get(`replicas/bench/${i % 100}`));
  return { target, put, get };
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
}

export async function main(opts: { quick: boolean }): Promise<string> {
  const n = opts.quick ? 300 : 2_000;
  const load = loadavg()[0] ?? 0;
  const rows: Row[] = [];
  // Same disk for both: the embedded log on tmpfs like the etcd member (the helper puts etcd on /dev/shm).
  const dir = mkdtempSync(join('/dev/shm', 'allegra-bench-registry-'));
  const host = await EmbeddedHost.start(join(dir, 'registry'));
  try {
    const agent = await openRegistry(`embedded:${join(dir, 'registry')}`, { role: 'agent', host: 'never' });
    rows.push(await measure('embedded, socket client as agent (token + role check)', agent, n));
    await agent.close();
  } finally {
    await host.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const plain = await startEtcdCluster({ members: 1 });
  try {
    const r = await EtcdRegistry.connect(plain.endpoints);
    rows.push(await measure('etcd 3.4, 1 member, no auth', r, n));
    await r.close();
  } finally {
    await plain.stop();
  }
  const authed = await startEtcdCluster({ members: 1, auth: true });
  try {
    const creds = authed.credentials as NonNullable<typeof authed.credentials>;
    const r = await EtcdRegistry.connect(authed.endpoints, { role: 'agent', auth: readEtcdCredentials(creds.agent) });
    rows.push(await measure('etcd 3.4, 1 member, auth (allegra-agent)', r, n));
    await r.close();
  } finally {
    await authed.stop();
  }
  const f = (v: number) => v.toFixed(2);
  const md = [
    '### Registry round trips (role clients)',
    '',
    `Sequential requests from one client, ${n} puts (250-byte replica-like values) then ${n} gets; latency in ms. Data on tmpfs for all three (fsync cost excluded alike). Command: \`node dist/bench/registry.js${opts.quick ? ' --quick' : ''}\`; ${new Date().toISOString()}; 1-min load average before the run ${load.toFixed(2)} on 2 shared cores, so expect ±30 % between runs.`,
    '',
    '| target | put p50 | put p99 | put/s | get p50 | get p99 | get/s |',
    '| :--- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.target} | ${f(pct(r.put, 50))} | ${f(pct(r.put, 99))} | ${Math.round((1000 * r.put.length) / r.put.reduce((a, b) => a + b, 0))} | ${f(pct(r.get, 50))} | ${f(pct(r.get, 99))} | ${Math.round((1000 * r.get.length) / r.get.reduce((a, b) => a + b, 0))} |`,
    ),
    '',
  ].join('\n');
  process.stdout.write(`${md}\n`);
  return md;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main({ quick: process.argv.includes('--quick') });
}
