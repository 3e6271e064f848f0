/**
 * The state API's acknowledged writes, as a replica sees them: HTTP PUTs on the instance's state socket
 * (api.ts → writer.ts with group commit → the registry's consensus → answered), one writer at a time and 16
 * concurrent writers, on the embedded store (one machine, fsynced log) and on a 3-member etcd — beside etcd's
 * own put latency and rate measured in the same run with a plain client on the same cluster (the floor any
 * design on etcd pays). Prints a Markdown section.
 * Run: `npm run build && node dist/bench/state.js [--quick]`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pino from 'pino';
import { Agent, request } from 'undici';
import type { Registry } from '../protocol/registry.js';
import { StateService } from '../quorum-agent/state/service.js';
import { EmbeddedHost } from '../registry/embedded.js';
import { openRegistry } from '../registry/open.js';
import { startEtcdCluster } from '../test/helpers/etcd-cluster.js';

interface Row {
  target: string;
  writers: number;
  latencies: number[];
  perSec: number;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
}

/** Runs `writers` loops of `op` until `n` operations are done; latencies in ms and operations per second. */
async function drive(n: number, writers: number, op: (i: number) => Promise<void>): Promise<{ latencies: number[]; perSec: number }> {
  const latencies: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: writers }, async () => {
      for (let i = next++; i < n; i = next++) {
        const s = performance.now();
        await op(i);
        latencies.push(performance.now() - s);
      }
    }),
  );
  return { latencies, perSec: (n / (performance.now() - t0)) * 1000 };
}

/** PUTs through the state API of one instance, served by a StateService over `registry`. */
async function throughStateApi(target: string, registry: Registry, dataDir: string, n: number): Promise<Row[]> {
  const service = new StateService({ registry, dataDir, log: pino({ level: 'silent' }), onStatus: () => {} });
  await service.ensure('i-bench');
  const dispatcher = new Agent({ connect: { socketPath: service.socketPath('i-bench') }, connections: 32 });
  const value = 'x'.repeat(256);
  const put = async (i: number) => {
    const res = await request(`http://state/v1/kv/key-${i % 500}`, { method: 'PUT', body: value, dispatcher });
    await res.body.dump();
    if (res.statusCode !== 200) throw new Error(`PUT answered ${res.statusCode}`);
  };
  await drive(Math.min(200, n), 4, put); // warm up
  const rows: Row[] = [];
  for (const writers of [1, 16]) rows.push({ target: `${target}: state API PUT`, writers, ...(await drive(n, writers, put)) });
  await dispatcher.close();
  await service.close();
  return rows;
}

/** Plain puts with the registry client: the consensus floor. */
async function rawPuts(target: string, registry: Registry, n: number): Promise<Row[]> {
  const value = 'x'.repeat(256);
  const rows: Row[] = [];
  for (const writers of [1, 16])
    rows.push({
      target,
      writers,
      ...(await drive(n, writers, async (i) => {
        await registry.put(`state/raw/key-${i % 500}`, value);
      })),
    });
  return rows;
}

export async function main(opts: { quick: boolean }): Promise<string> {
  const n = opts.quick ? 300 : 2_000;
  const load = loadavg()[0] ?? 0;
  const rows: Row[] = [];
  // Same disk for every target: tmpfs, as the etcd helper uses for its members.
  const dir = mkdtempSync(join('/dev/shm', 'allegra-bench-state-'));
  try {
    const host = await EmbeddedHost.start(join(dir, 'registry'));
    const agent = await openRegistry(`embedded:${join(dir, 'registry')}`, { role: 'agent', host: 'never' });
    rows.push(...(await rawPuts('embedded: registry put (agent client)', agent, n)));
    rows.push(...(await throughStateApi('embedded', agent, join(dir, 'agent-e'), n)));
    await agent.close();
    await host.close();

    const etcd = await startEtcdCluster({ members: 3 });
    try {
      const registry = await openRegistry(`etcd://${etcd.endpoints.join(',')}`, { role: 'admin' });
      rows.push(...(await rawPuts('etcd ×3: etcd3 put (plain client)', registry, n)));
      rows.push(...(await throughStateApi('etcd ×3', registry, join(dir, 'agent-x'), n)));
      await registry.close();
    } finally {
      await etcd.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const lines = [
    '#### State API: acknowledged writes per instance',
    '',
    `Command: \`npm run build && node dist/bench/state.js${opts.quick ? ' --quick' : ''}\`; ${n} writes of 256 bytes per row over 500 keys, ` +
      `load average ${load.toFixed(1)} at the start; registries on tmpfs. A state API write is answered once its registry ` +
      "transaction (value + the instance's checksum record, guarded by the checksum record's revision) is committed.",
    '',
    '| target | writers | p50 ms | p99 ms | writes/s |',
    '| :----- | ------: | -----: | -----: | -------: |',
    ...rows.map(
      (r) =>
        `| ${r.target} | ${r.writers} | ${pct(r.latencies, 50).toFixed(2)} | ${pct(r.latencies, 99).toFixed(2)} | ${Math.round(r.perSec)} |`,
    ),
  ];
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main({ quick: process.argv.includes('--quick') }).then(
    (text) => {
      process.stdout.write(`${text}\n`);
      process.exit(0);
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
