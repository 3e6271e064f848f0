/**
 * `allegra verify NAME`: anyone, with no key, checks that a majority of the instance's quorum serves the
 * artifact and spec the registry records. The agent asked tells what the registry records (hashes only,
 * and the owner's create request, checked here) and the members' addresses and keys; each member is then
 * asked directly for a signed account of its replicas over a fresh nonce, so no member can answer with an
 * old account or another's. Exit 1 when fewer than a majority match.
 */
import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { checkInstance, type Grant } from '../protocol/grants.js';
import { verifyRecord } from '../protocol/records.js';
import type { Attestation } from '../protocol/spec-hash.js';
import { resolveRpc } from './config.js';
import { checkName, type GlobalOpts } from './instance-commands.js';
import { CliError, type Output, table } from './output.js';

interface PublicInstance {
  name: string;
  id: string;
  owner: string;
  version: number;
  state: string;
  immutable: boolean;
  artifact: string | null;
  specHash: string;
  createGrant: Grant | null;
  quorum: { id: string; members: Array<{ id: string; rpc: string | null; publicKey: string | null }> } | null;
}

async function getJson<T>(url: string): Promise<T> {
  const res = await request(url, { headersTimeout: 10_000, bodyTimeout: 10_000 });
  const body = (await res.body.json().catch(() => undefined)) as T & { error?: { code: string; message: string } };
  if (res.statusCode === 404) throw new CliError(body?.error?.message ?? `not found: ${url}`, 3);
  if (res.statusCode !== 200) throw new CliError(body?.error?.message ?? `${url}: HTTP ${res.statusCode}`);
  return body;
}

export async function verifyCommand(name: string, g: GlobalOpts, out: Output): Promise<void> {
  const [base] = resolveRpc(g.rpc);
  const pub = await getJson<PublicInstance>(new URL(`/v1/public/instances/${encodeURIComponent(checkName(name))}`, base).toString());
  const problems: string[] = [];
  // The record must be what its owner's create request made (id, owner, name).
  const bad = pub.createGrant
    ? checkInstance({ id: pub.id, name: pub.name, owner: pub.owner, createGrant: pub.createGrant } as Parameters<typeof checkInstance>[0])
    : 'no create request';
  if (bad) problems.push(`registry record: ${bad}`);
  const members = pub.quorum?.members ?? [];
  const reports = await Promise.all(
    members.map(async (m) => {
      if (!m.rpc || !m.publicKey) return { member: m.id, ok: false, why: 'not live', replicas: [] as Attestation['replicas'] };
      const nonce = randomBytes(16).toString('hex');
      try {
        const a = await getJson<Attestation & { signature?: { key: string; sig: string } }>(
          `${new URL(`/v1/public/instances/${encodeURIComponent(name)}/attestation`, m.rpc)}?nonce=${nonce}`,
        );
        if (!verifyRecord(a, m.publicKey)) return { member: m.id, ok: false, why: 'bad signature', replicas: a.replicas ?? [] };
        if (a.nonce !== nonce || a.nodeId !== m.id || a.instanceId !== pub.id)
          return { member: m.id, ok: false, why: 'answer is not for this request', replicas: a.replicas };
        const serving = a.replicas.filter((r) => r.healthy);
        const matching = serving.filter((r) => r.artifact === pub.artifact && r.specHash === pub.specHash);
        const ok = serving.length > 0 && matching.length === serving.length;
        const why = ok
          ? 'serves the recorded artifact and spec'
          : serving.length === 0
            ? 'serves no healthy replica'
            : 'serves another artifact or spec';
        return { member: m.id, ok, why, replicas: a.replicas };
      } catch (err) {
        return { member: m.id, ok: false, why: `no answer: ${(err as Error).message}`, replicas: [] as Attestation['replicas'] };
      }
    }),
  );
  const needed = Math.floor(members.length / 2) + 1;
  const agreeing = reports.filter((r) => r.ok).length;
  const ok = problems.length === 0 && members.length > 0 && agreeing >= needed;
  out.result(
    {
      name,
      id: pub.id,
      artifact: pub.artifact,
      specHash: pub.specHash,
      version: pub.version,
      members: reports,
      agreeing,
      needed,
      ok,
      problems,
    },
    () =>
      [
        `${name} (${pub.id}) version ${pub.version}: artifact sha256:${(pub.artifact ?? 'none').slice(0, 16)}…, spec ${pub.specHash.slice(0, 16)}…`,
        table(
          ['MEMBER', 'REPLICAS', 'REPORT'],
          reports.map((r) => [r.member, r.replicas.map((x) => `${x.slot}${x.healthy ? '' : '(down)'}`).join(',') || '-', r.why]),
        ),
        ok ? `verified: ${agreeing} of ${members.length} quorum members serve what the registry records (majority ${needed})` : '',
      ]
        .filter(Boolean)
        .join('\n'),
  );
  if (!ok)
    throw new CliError(
      problems[0] ?? `only ${agreeing} of ${members.length} quorum members serve the recorded artifact and spec (a majority is ${needed})`,
    );
}
