/**
 * State survives the loss of any minority (issue 13), on the namespaces cluster: 3 etcd members with auth,
 * 4 agents (one quorum: every member keeps a copy of the instance's state, three run replicas), a gateway, and
 * the state-app fixture. While writers put unique keys and compare-and-swap a counter through the gateway, an
 * agent is SIGKILLed every few seconds (and comes back as itself), an agent and an etcd member are
 * partitioned. Afterwards: every acknowledged write is read back with its value from every replica on every
 * member; writes whose outcome is unknown are either everywhere or nowhere (never half-visible); no two CAS
 * writers won from the same revision; every member's copy has the same checksum. Acknowledged = present.
 */
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InstanceStatus } from '../../protocol/types.js';
import { LabCluster } from '../helpers/lab-cluster.js';
import { sleep, waitFor } from '../helpers/tmp.js';

const APP = fileURLToPath(new URL('../fixtures/state-app/', import.meta.url));
const WRITER = fileURLToPath(new URL('../fixtures/state-writer.mjs', import.meta.url));
const AGENTS = ['a1', 'a2', 'a3', 'a4'];
const HOST = 'kv.lab.test';

interface Write {
  key: string;
  value: string;
  outcome: 'acked' | 'refused' | 'unknown';
}
interface Cas {
  from: string;
  value: number;
  outcome: 'acked' | 'refused' | 'unknown';
}

describe('state under chaos: members killed, minorities partitioned', () => {
  let cluster: LabCluster;

  beforeAll(async () => {
    cluster = await LabCluster.start({ etcd: ['e1', 'e2', 'e3'], agents: AGENTS, gateways: ['g1'], baseDomain: 'lab.test' });
    cluster.cli(['create', 'kv', '--from', APP, '--cmd', 'node server.mjs']);
    await cluster.converged(AGENTS.length, ['g1']);
  }, 240_000);

  afterAll(async () => {
    const lab = cluster?.lab;
    await cluster?.cleanup();
    expect(lab?.existing() ?? []).toEqual([]);
  });

  /** GETs a state path from one replica directly, through its own relay socket on its agent's machine. */
  const fromReplica = async (endpoint: string, path: string) => {
    const dispatcher = new Agent({ connect: { socketPath: endpoint.slice('unix:'.length) } });
    try {
      const res = await request(`http://replica/state/${path}`, { dispatcher, headersTimeout: 10_000 });
      return { status: res.statusCode, text: await res.body.text() };
    } finally {
      await dispatcher.close();
    }
  };

  it('keeps every acknowledged write on every member, and never lets two CAS writers win', async () => {
    const { lab } = cluster;
    const writer = lab.spawn('c1', [process.execPath, WRITER, cluster.gatewayUrl('g1'), HOST, '40000', '4', '3'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    writer.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const done = new Promise<void>((r) => writer.once('exit', () => r()));

    // Members killed one after another (each comes back as itself), then partitions of a minority.
    for (const victim of ['a1', 'a2', 'a3']) {
      await sleep(3_000);
      await cluster.kill(victim);
      await sleep(2_000);
      await cluster.startAgent(victim);
    }
    await sleep(2_000);
    lab.cut('a4');
    lab.cut('e3');
    await sleep(6_000);
    lab.restore('a4');
    lab.restore('e3');
    writer.kill('SIGTERM');
    await done;
    await waitFor(() => cluster.etcdHealthy(), { timeoutMs: 30_000, what: 'etcd whole again' });
    await cluster.converged(AGENTS.length, ['g1']);

    const { writes, cas } = JSON.parse(out.trim()) as { writes: Write[]; cas: Cas[] };
    const acked = writes.filter((w) => w.outcome === 'acked');
    const unknown = writes.filter((w) => w.outcome === 'unknown');
    console.log(
      `state chaos: ${writes.length} writes (${acked.length} acknowledged, ${unknown.length} unknown), ${cas.filter((c) => c.outcome === 'acked').length} CAS wins of ${cas.length}`,
    );
    expect(acked.length).toBeGreaterThan(100);

    // Every replica on every member serves the same keys; every acknowledged one with its value.
    const status = await waitFor(
      async () => {
        const s = JSON.parse(cluster.cli(['status', 'kv', '--json'])) as InstanceStatus;
        const copies = s.members.map((m) => m.state);
        return copies.length === AGENTS.length && copies.every((c) => c?.matches) && new Set(copies.map((c) => c?.revision)).size === 1
          ? s
          : undefined;
      },
      { timeoutMs: 30_000, what: 'every member at one revision with a matching copy' },
    );
    // Checksums agree across all four members (three run replicas, one only keeps the copy).
    expect(new Set(status.members.map((m) => m.state?.checksum)).size).toBe(1);
    const replicas = status.replicas.filter((r) => r.healthy);
    expect(new Set(replicas.map((r) => r.nodeId)).size).toBeGreaterThanOrEqual(3);
    const present = new Map<string, Set<string>>();
    for (const r of replicas) {
      const listed = await fromReplica(r.endpoint, 'kv?prefix=w/&limit=10000');
      expect(`${listed.status} ${listed.status === 200 ? '' : listed.text}`, `listing at ${r.nodeId}.${r.slot}`).toBe('200 ');
      const keys = new Set((JSON.parse(listed.text) as { items: Array<{ key: string }> }).items.map((i) => i.key));
      present.set(`${r.nodeId}.${r.slot}`, keys);
      for (const w of acked.filter((_, i) => i % 25 === 0)) {
        const got = await fromReplica(r.endpoint, `kv/${w.key}`);
        expect(`${got.status} ${got.text}`, `${w.key} at ${r.nodeId}`).toBe(`200 ${w.value}`);
      }
    }
    const views = [...present.values()];
    const first = views[0] as Set<string>;
    for (const v of views) expect([...v].sort()).toEqual([...first].sort());
    // Acknowledged = present (among acknowledged writes); nothing present that was never sent or was refused.
    expect(acked.filter((w) => first.has(w.key)).length).toBe(acked.length);
    const allowed = new Set([...acked, ...unknown].map((w) => w.key));
    expect([...first].filter((k) => !allowed.has(k))).toEqual([]);

    // Compare-and-swap: no two acknowledged writers won from the same revision, and the counter holds at
    // least every acknowledged increment.
    const wins = cas.filter((c) => c.outcome === 'acked');
    expect(new Set(wins.map((c) => c.from)).size).toBe(wins.length);
    expect(new Set(wins.map((c) => c.value)).size).toBe(wins.length);
    const counter = await fromReplica((replicas[0] as { endpoint: string }).endpoint, 'kv/counter');
    expect(Number(counter.text)).toBeGreaterThanOrEqual(Math.max(0, ...wins.map((c) => c.value)));
  }, 300_000);
});
