import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { ReplicaRecord } from '../../../protocol/types.js';
import { type Driver, type ExitInfo, type ReplicaLaunch, ReplicaRefused } from '../../../quorum-agent/drivers/driver.js';
import { DriverSet } from '../../../quorum-agent/drivers/set.js';
import { type DesiredReplica, Supervisor } from '../../../quorum-agent/supervisor.js';
import { waitFor } from '../../helpers/tmp.js';

/** A driver whose replicas are always healthy and stop when asked; counts starts. */
function fakeDriver(): Driver & { starts: ReplicaLaunch[] } {
  const starts: ReplicaLaunch[] = [];
  return {
    name: 'process',
    starts,
    async destroy() {},
    async start(launch) {
      starts.push(launch);
      let exit: (e: ExitInfo) => void = () => {};
      const exited = new Promise<ExitInfo>((r) => (exit = r));
      return {
        endpoint: `http://127.0.0.1:${3000 + starts.length}`,
        pid: 1000 + starts.length,
        exited,
        health: async () => true,
        stop: async () => exit({ code: 0, signal: null }),
        exec: async () => {
          throw new Error('not in this test');
        },
      };
    },
  };
}

const desired = (version: number, cmd = 'node server.js', workDir = '/app/v1'): DesiredReplica => ({
  instanceId: 'i-1',
  instanceName: 'app',
  slot: 0,
  version,
  driver: 'process',
  launch: { instanceId: 'i-1', instanceName: 'app', owner: 'o', slot: 0, workDir, cmd, env: {}, listenPort: 0, logFile: '/dev/null' },
});

describe('Supervisor', () => {
  it('keeps a replica running across spec versions that do not change its process, and rolls out when they do', async () => {
    const driver = fakeDriver();
    const records: Array<ReplicaRecord | null> = [];
    const sup = new Supervisor({
      nodeId: 'n-1',
      drivers: DriverSet.of(driver),
      log: pino({ level: 'silent' }),
      report: (_k, r) => records.push(r),
      healthIntervalMs: 20,
    });
    sup.reconcile([desired(1)]);
    await waitFor(() => records.at(-1)?.healthy, { what: 'first replica healthy' });
    // A new version that only changed, say, the instance's domains: same process, new version reported.
    sup.reconcile([desired(2)]);
    await waitFor(() => records.at(-1)?.version === 2, { what: 'version 2 reported' });
    expect(driver.starts).toHaveLength(1);
    // New code: a new replica is started beside the old one and takes over.
    sup.reconcile([desired(3, 'node server.js', '/app/v3')]);
    await waitFor(() => records.at(-1)?.version === 3, { what: 'version 3 rolled out' });
    expect(driver.starts).toHaveLength(2);
    expect(driver.starts[1]?.workDir).toBe('/app/v3');
    await sup.stopAll();
  });

  it('publishes why a refused replica does not run, and drains an instance only once its replicas stopped', async () => {
    const records: Array<ReplicaRecord | null> = [];
    let refuse = true;
    const ok = fakeDriver();
    const driver: Driver = {
      name: 'process',
      destroy: async () => {},
      start: async (launch) => {
        if (refuse) throw new ReplicaRefused('this node cannot sandbox replicas (test)');
        return ok.start(launch);
      },
    };
    const sup = new Supervisor({
      nodeId: 'n-1',
      drivers: DriverSet.of(driver),
      log: pino({ level: 'silent' }),
      report: (_k, r) => records.push(r),
      healthIntervalMs: 20,
    });
    sup.reconcile([desired(1)]);
    await waitFor(() => records.at(-1)?.lastError, { what: 'refusal published' });
    expect(records.at(-1)).toMatchObject({
      endpoint: '',
      healthy: false,
      pid: null,
      lastError: 'refused: this node cannot sandbox replicas (test)',
    });
    expect(await sup.drained('i-1')).toBe(false);
    refuse = false;
    await waitFor(() => records.at(-1)?.healthy, { timeoutMs: 5_000, what: 'started after the refusal ended' });
    expect(records.at(-1)?.lastError).toBeUndefined();
    sup.reconcile([]);
    expect(await sup.drained('i-1')).toBe(true);
    expect(records.at(-1)).toBeNull();
  });

  it('refuses a replica whose driver the node does not offer', async () => {
    const records: Array<ReplicaRecord | null> = [];
    const sup = new Supervisor({
      nodeId: 'n-1',
      drivers: DriverSet.of(fakeDriver()),
      log: pino({ level: 'silent' }),
      report: (_k, r) => records.push(r),
    });
    sup.reconcile([{ ...desired(1), driver: 'vm' }]);
    await waitFor(() => records.at(-1)?.lastError, { what: 'refusal published' });
    expect(records.at(-1)?.lastError).toBe('refused: this node does not offer the vm driver');
    await sup.stopAll();
  });

  it('unpublishes a replica the autoscaler scaled away at once and stops it after the drain time', async () => {
    const driver = fakeDriver();
    const records: Array<{ slot: number; record: ReplicaRecord | null }> = [];
    const sup = new Supervisor({
      nodeId: 'n-1',
      drivers: DriverSet.of(driver),
      log: pino({ level: 'silent' }),
      report: (k, record) => records.push({ slot: k.slot, record }),
      healthIntervalMs: 20,
      scaleDownDrainMs: 300,
    });
    const slot = (n: number): DesiredReplica => ({ ...desired(1), slot: n, launch: { ...desired(1).launch, slot: n } });
    sup.reconcile([slot(0), slot(1)], new Set(['i-1']), new Map([['i-1', 2]]));
    await waitFor(() => records.filter((r) => r.record?.healthy).length >= 2, { what: 'two replicas healthy' });
    const t = Date.now();
    sup.reconcile([slot(0)], new Set(['i-1']), new Map([['i-1', 1]]));
    expect(records.at(-1)).toEqual({ slot: 1, record: null });
    expect(sup.runs('i-1', 1)).toBe(false);
    // Still stopping (draining), then gone: drained() waits for it.
    sup.reconcile([], new Set(), new Map());
    expect(await sup.drained('i-1')).toBe(true);
    expect(Date.now() - t).toBeGreaterThanOrEqual(250);
  });
});
