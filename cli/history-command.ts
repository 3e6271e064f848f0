/**
 * `allegra history NAME [--verify]`: the instance's operations, who signed each, hash-chained. `--verify`
 * re-checks everything on this machine (protocol/history.ts): the chain, every signature, and that each
 * author was allowed to act. It also remembers the last head it verified per instance, so a history cut
 * back to an earlier record (which a chain alone cannot reveal) fails the next verification.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type HistoryHead, type HistoryRecord, recordHash, verifyHistory } from '../protocol/history.js';
import { allegraHome } from './config.js';
import { client, type GlobalOpts, instancePath } from './instance-commands.js';
import { CliError, type Output, table } from './output.js';

interface HistoryAnswer {
  instanceId: string;
  name: string;
  head: HistoryHead | null;
  records: HistoryRecord[];
  malformed: string[];
  nodes: Array<{ id: string; publicKey: string }>;
}

const seenFile = () => join(allegraHome(), 'history-heads.json');

function readSeen(): Record<string, HistoryHead> {
  try {
    return JSON.parse(readFileSync(seenFile(), 'utf8')) as Record<string, HistoryHead>;
  } catch {
    return {};
  }
}

/** One line per record: what, by whom, and the detail that matters. */
function describe(r: HistoryRecord): string {
  const d = r.detail;
  switch (r.op) {
    case 'deploy':
      return `version ${d.version} sha256:${String(d.artifact).slice(0, 12)}…`;
    case 'auth.add':
    case 'auth.remove':
      return `key ${String(d.key).slice(0, 16)}…`;
    case 'expose':
      return String(d.host ?? '');
    case 'revoke':
      return d.governance
        ? `governance ${(d.governance as { threshold: number; keys: string[] }).threshold} of ${(d.governance as { keys: string[] }).keys.length}`
        : 'no governance';
    case 'governance':
      return `${(d.action as { type: string }).type} (${d.proposal}, ${(d.approvedBy as string[] | undefined)?.length ?? 0} signatures)`;
    case 'ssh.start':
    case 'ssh.end':
      return `user ${String(d.user).slice(0, 12)}… replica ${d.replica} on ${r.node}${r.op === 'ssh.end' ? ` (exit ${d.exitCode ?? '-'})` : ''}`;
    default:
      return '';
  }
}

export async function historyCommand(name: string, opts: { verify?: boolean }, g: GlobalOpts, out: Output): Promise<void> {
  const h = await client(g).call<HistoryAnswer>({ method: 'GET', path: instancePath(name, '/history') });
  if (!opts.verify) {
    out.result({ instanceId: h.instanceId, head: h.head, records: h.records }, () =>
      table(
        ['SEQ', 'TIME', 'OPERATION', 'AUTHOR', 'DETAIL'],
        h.records.map((r) => [String(r.seq), new Date(r.at).toISOString(), r.op, `${r.author.slice(0, 12)}…`, describe(r)]),
      ),
    );
    return;
  }
  const check = verifyHistory(h.instanceId, h.records, { head: h.head, nodeKeys: new Map(h.nodes.map((n) => [n.id, n.publicKey])) });
  const problems = [...check.problems];
  for (const key of h.malformed) problems.push({ seq: Number(key.split('/').pop()), reason: 'record is not a history record (altered)' });
  // A head verified earlier must still be in the chain, unchanged: catches a history cut back and re-headed.
  const seen = readSeen()[h.instanceId];
  if (seen) {
    const then = h.records[seen.seq];
    if (!then || recordHash(then) !== seen.hash)
      problems.push({ seq: seen.seq, reason: `record ${seen.seq} verified earlier on this machine is gone or changed` });
  }
  const ok = problems.length === 0;
  if (ok && check.head) writeFileSync(seenFile(), `${JSON.stringify({ ...readSeen(), [h.instanceId]: check.head }, null, 2)}\n`);
  out.result(
    {
      ok,
      instanceId: h.instanceId,
      records: h.records.length,
      head: check.head,
      problems,
      owner: check.owner,
      team: check.team,
      revoked: check.revoked,
    },
    () =>
      ok
        ? `history of ${name} verified: ${h.records.length} records, chain and every signature intact, every author allowed`
        : problems.map((p) => `record ${p.seq}: ${p.reason}`).join('\n'),
  );
  if (!ok) {
    const first = problems[0] as { seq: number; reason: string };
    throw new CliError(
      `history of ${name} fails verification: record ${first.seq}: ${first.reason}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''}`,
    );
  }
}
