/**
 * `allegra usage NAME`: what each operator (node) served for the instance, from the records each node
 * signed: requests, bytes in/out, CPU seconds and replica-hours. Each record's signature is checked here,
 * against the node's registered key when the node is known.
 */
import { verifyRecord } from '../protocol/records.js';
import type { UsageRecord } from '../protocol/usage.js';
import { client, type GlobalOpts, instancePath } from './instance-commands.js';
import { CliError, mib, type Output, table } from './output.js';

export async function usageCommand(name: string, g: GlobalOpts, out: Output): Promise<void> {
  const u = await client(g).call<{ instanceId: string; records: UsageRecord[]; nodes: Array<{ id: string; publicKey: string }> }>({
    method: 'GET',
    path: instancePath(name, '/usage'),
  });
  const keys = new Map(u.nodes.map((n) => [n.id, n.publicKey]));
  const rows = u.records.map((r) => {
    const key = keys.get(r.nodeId) ?? r.signature?.key ?? '';
    return { ...r, replicaHours: r.replicaSeconds / 3600, verified: verifyRecord(r, key), signedBy: key };
  });
  const total = rows.reduce(
    (t, r) => ({
      requests: t.requests + r.requests,
      bytesIn: t.bytesIn + r.bytesIn,
      bytesOut: t.bytesOut + r.bytesOut,
      cpuSeconds: t.cpuSeconds + r.cpuSeconds,
      replicaHours: t.replicaHours + r.replicaHours,
    }),
    { requests: 0, bytesIn: 0, bytesOut: 0, cpuSeconds: 0, replicaHours: 0 },
  );
  out.result({ instanceId: u.instanceId, nodes: rows, total }, () =>
    rows.length === 0
      ? `no usage recorded for ${name} yet (nodes write their records every 10 s)`
      : table(
          ['NODE', 'REQUESTS', 'BYTES IN', 'BYTES OUT', 'CPU S', 'REPLICA-H', 'SIGNATURE'],
          [
            ...rows.map((r) => [
              r.nodeId,
              String(r.requests),
              mib(r.bytesIn),
              mib(r.bytesOut),
              r.cpuSeconds.toFixed(2),
              r.replicaHours.toFixed(3),
              r.verified ? 'valid' : 'INVALID',
            ]),
            [
              'total',
              String(total.requests),
              mib(total.bytesIn),
              mib(total.bytesOut),
              total.cpuSeconds.toFixed(2),
              total.replicaHours.toFixed(3),
              '',
            ],
          ],
        ),
  );
  const bad = rows.find((r) => !r.verified);
  if (bad) throw new CliError(`the usage record of node ${bad.nodeId} does not carry its signature: do not pay for it`);
}
