/**
 * The etcd backend against a real 3-member etcd cluster: the shared Registry contract, then what only a
 * cluster can show (a watch and a lease riding through member kills, compaction, openRegistry).
 */
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WatchEvent } from '../../../protocol/registry.js';
import { EtcdRegistry } from '../../../registry/etcd.js';
import { openRegistry } from '../../../registry/open.js';
import { type EtcdCluster, startEtcdCluster } from '../../helpers/etcd-cluster.js';
import { sleep, waitFor } from '../../helpers/tmp.js';
import { registryContract } from './contract.js';

let cluster: EtcdCluster;
/** Every client a test opened, closed in afterAll even when the test failed half-way. */
const opened: EtcdRegistry[] = [];

async function connect(endpoints = cluster.endpoints): Promise<EtcdRegistry> {
  const r = await EtcdRegistry.connect(endpoints);
  opened.push(r);
  return r;
}

/** Endpoints of every member except `i`: a client that keeps working while member `i` is down. */
function others(i: number): string[] {
  return cluster.endpoints.filter((_, j) => j !== i);
}

/**
 * After a kill the cluster may be electing a leader, and a write forwarded to the dead leader waits for
 * etcd's request timeout. Probe with short deadlines, outside the test's keys, until a write commits, so
 * that the test's own writes are never ambiguous.
 */
async function waitWritable(writer: EtcdRegistry): Promise<void> {
  const probe = () => writer.client.kv.put({ key: Buffer.from('scratch/probe'), value: Buffer.from('x') }, { deadline: Date.now() + 500 });
  await waitFor(async () => Number((await probe()).header.revision) > 0, { timeoutMs: 10_000, what: 'cluster to accept writes' });
}

beforeAll(async () => {
  // One cluster for the whole file: starting three members costs about half a second.
  cluster = await startEtcdCluster({ members: 3 });
});

afterAll(async () => {
  await Promise.all(opened.map((r) => r.close()));
  await cluster?.stop();
});

registryContract('etcd (3-member cluster)', async () => {
  const registry = await EtcdRegistry.connect(cluster.endpoints);
  // The contract uses fixed keys: start every test from an empty keyspace.
  await registry.txn({ compare: [], success: [{ type: 'deletePrefix', prefix: '' }] });
  const peer = await EtcdRegistry.connect(cluster.endpoints);
  return {
    registry,
    peer,
    cleanup: async () => {
      await registry.close();
      await peer.close();
    },
  };
});

describe('etcd registry on a cluster with failing members', () => {
  it('a watch resumes after its member is SIGKILLed: every event exactly once, in order', async () => {
    const watcher = await connect();
    const seen: WatchEvent[] = [];
    // No fromRevision: the resume point comes from the watch's creation revision, then from events.
    const w = watcher.watch('ew/', (events) => seen.push(...events));
    await sleep(100);
    const written: Array<[string, string]> = [];
    const writeBatch = async (writer: EtcdRegistry, round: string) => {
      for (let k = 0; k < 5; k++) {
        const key = `ew/${round}-${k % 2}`;
        if (k === 4) {
          await writer.delete(key);
          written.push(['delete', key]);
        } else {
          await writer.put(key, `${round}.${k}`);
          written.push(['put', key]);
        }
      }
    };
    await writeBatch(await connect(), 'start');
    // Kill every member in turn: whichever member the watch stream is on, it loses it at least once.
    for (let i = 0; i < cluster.endpoints.length; i++) {
      const writer = await connect(others(i));
      await cluster.kill(i);
      await waitWritable(writer);
      await writeBatch(writer, `down${i}`);
      await cluster.restart(i);
      await writeBatch(writer, `up${i}`);
    }
    await waitFor(() => seen.length >= written.length, { timeoutMs: 10_000, what: `${written.length} watch events` });
    await sleep(200); // a duplicate would arrive right behind the last event
    w.close();
    expect(seen.map((e) => [e.type, e.key])).toEqual(written);
    for (let j = 1; j < seen.length; j++) expect(seen[j]!.modRevision).toBeGreaterThan(seen[j - 1]!.modRevision);
  });

  it('a lease survives a member kill and expires within TTL + 1 s after its holder closes', async () => {
    const holder = await connect();
    const observer = await connect(others(1));
    const lease = await holder.grantLease(2_000);
    expect(lease.id).toMatch(/^[1-9][0-9]*$/);
    let lost = false;
    lease.onLost(() => {
      lost = true;
    });
    await holder.put('el/held', 'x', { lease: lease.id });
    await cluster.kill(1);
    await sleep(2_500); // longer than the TTL: only keep-alives through the surviving members keep it
    expect(lost).toBe(false);
    expect((await observer.get('el/held'))?.lease).toBe(lease.id);
    await cluster.restart(1);

    const deleted = new Promise<number>((resolve) => {
      const w = observer.watch('el/', (events) => {
        if (events.some((e) => e.type === 'delete' && e.key === 'el/held')) {
          w.close();
          resolve(Date.now());
        }
      });
    });
    await sleep(100);
    const closedAt = Date.now();
    await holder.close();
    const elapsed = (await deleted) - closedAt;
    expect(elapsed).toBeLessThanOrEqual(lease.ttlMs + 1_000);
  });

  it('reports lease loss when the lease is revoked behind the holder', async () => {
    const holder = await connect();
    const other = await connect();
    const lease = await holder.grantLease(1_000);
    let lost = false;
    lease.onLost(() => {
      lost = true;
    });
    await other.client.leaseClient.leaseRevoke({ ID: lease.id });
    await waitFor(() => lost, { timeoutMs: 3_000, what: 'onLost' });
  });

  it('calls onCompacted with the current revision when the history to replay was compacted', async () => {
    const r = await connect();
    const first = await r.put('ec/a', '1');
    await r.put('ec/a', '2');
    const current = await r.put('ec/a', '3');
    await r.client.kv.compact({ revision: current, physical: true });
    const compacted: number[] = [];
    const seen: WatchEvent[] = [];
    const w = r.watch('ec/', (events) => seen.push(...events), { fromRevision: first, onCompacted: (rev) => compacted.push(rev) });
    await waitFor(() => compacted.length > 0, { what: 'onCompacted' });
    expect(compacted[0]).toBeGreaterThanOrEqual(current);
    // Without a consumer re-listing, the watch carries on after the reported revision.
    const later = await r.put('ec/b', 'later');
    await waitFor(() => seen.some((e) => e.key === 'ec/b'), { what: 'event after compaction' });
    w.close();
    expect(seen.map((e) => e.modRevision)).toEqual([later]);
  });
});

describe('openRegistry with etcd:// URLs', () => {
  it('connects to the listed members', async () => {
    const r = await openRegistry(`etcd://${cluster.endpoints.join(',')}`, { role: 'admin' });
    try {
      expect(r).toBeInstanceOf(EtcdRegistry);
      const rev = await r.put('eo/k', 'v');
      expect(await r.get('eo/k')).toMatchObject({ value: 'v', modRevision: rev });
    } finally {
      await r.close();
    }
  });

  it('fails within seconds, naming the endpoint, when nothing listens there', async () => {
    const port = await unusedPort();
    const started = Date.now();
    await expect(openRegistry(`etcd://127.0.0.1:${port}`, { role: 'admin' })).rejects.toThrow(`cannot reach etcd at 127.0.0.1:${port}`);
    expect(Date.now() - started).toBeLessThan(5_000);
    await expect(openRegistry('etcd://', { role: 'admin' })).rejects.toThrow(/invalid registry URL/);
    await expect(openRegistry('etcd://127.0.0.1', { role: 'admin' })).rejects.toThrow(/invalid registry URL/);
  });
});

/** A loopback port that was free a moment ago and has no listener now. */
function unusedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
