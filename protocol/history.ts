/**
 * An instance's history: every operation as a record, hash-chained to the one before it and signed by the
 * node that appended it; operations someone asked for also carry that person's signed request (the RPC
 * envelope, with its body for JSON requests; for uploads the envelope alone, whose signed content hash is
 * the artifact's). Removing, reordering or altering a record breaks the chain or a signature, and
 * `verifyHistory` replays the chain to check that every author was allowed to do what it did at that point
 * (owner, team keys, revocation, governance approvals). Pure: shared by agents and the CLI.
 */
import { z } from 'zod';
import { checkGrant, type Grant } from './grants.js';
import { canonicalJson, type RecordSignature, verifyRecord } from './records.js';
import { governancePolicy, grant as grantSchema } from './schemas.js';
import { SIGNATURE_HEADERS, type SignedEnvelope, sha256Hex, verifyEnvelope } from './signing.js';
import type { GovernancePolicy } from './types.js';

export const HISTORY_OPS = [
  'create',
  'deploy',
  'rollback',
  'start',
  'stop',
  'expose',
  'auth.add',
  'auth.remove',
  'revoke',
  'governance',
  'scale',
  'ssh.start',
  'ssh.end',
] as const;
export type HistoryOp = (typeof HISTORY_OPS)[number];

/** What an operation contributes to its record; the appending node adds the chain fields and signs. */
export interface HistoryEntry {
  op: HistoryOp;
  /** Key of whoever asked (the request's signer), or the node's key for what the node did on its own. */
  author: string;
  /** The author's signed request; `body` is omitted for uploads (the envelope's content hash names the artifact). */
  request?: { envelope: SignedEnvelope; body?: string };
  /** Governance: the signed requests (proposal first, then approvals) that together authorize the change. */
  approvals?: Grant[];
  detail: Record<string, unknown>;
}

export interface HistoryRecord extends HistoryEntry {
  instanceId: string;
  seq: number;
  /** Hash of the previous record (of the genesis string for the first). */
  prev: string;
  at: number;
  /** Node that appended the record; its key signed it. */
  node: string;
  signature: RecordSignature;
}

export interface HistoryHead {
  seq: number;
  hash: string;
}

const envelopeSchema = z.object({
  method: z.string().max(16),
  path: z.string().max(2048),
  headers: z.record(z.string().max(128), z.string().max(4096)),
});

export const historyRecordSchema = z.object({
  instanceId: z.string().min(1),
  seq: z.number().int().min(0),
  prev: z.string().regex(/^[0-9a-f]{64}$/),
  at: z.number(),
  op: z.enum(HISTORY_OPS),
  author: z.string().regex(/^[0-9a-f]{64}$/),
  request: z
    .object({
      envelope: envelopeSchema,
      body: z
        .string()
        .max(16 * 1024)
        .optional(),
    })
    .optional(),
  approvals: z.array(grantSchema).max(64).optional(),
  detail: z.record(z.string(), z.unknown()),
  node: z.string().min(1),
  signature: z.object({ key: z.string().regex(/^[0-9a-f]{64}$/), sig: z.string().max(200) }),
});

export const historyHeadSchema = z.object({ seq: z.number().int().min(0), hash: z.string().regex(/^[0-9a-f]{64}$/) });

/** The `prev` of an instance's first record. */
export function genesisHash(instanceId: string): string {
  return sha256Hex(`allegra-history\n${instanceId}`);
}

/** A record's hash, which the next record names as `prev`: over all of it, signature included. */
export function recordHash(record: HistoryRecord): string {
  return sha256Hex(canonicalJson(record));
}

/** The instance name in an RPC path `/v1/instances/<name>/…`. */
function pathName(path: string): string | undefined {
  const m = /^\/v1\/instances\/([^/?]+)/.exec(path);
  return m ? decodeURIComponent(m[1] as string) : undefined;
}

/** What each operation's request must be: method and path (after the instance name). */
const REQUESTS: Partial<Record<HistoryOp, { method: string; path: RegExp }>> = {
  create: { method: 'POST', path: /^\/v1\/instances$/ },
  deploy: { method: 'PUT', path: /^\/v1\/instances\/[^/]+\/code$/ },
  rollback: { method: 'POST', path: /^\/v1\/instances\/[^/]+\/rollback$/ },
  start: { method: 'POST', path: /^\/v1\/instances\/[^/]+\/start$/ },
  stop: { method: 'POST', path: /^\/v1\/instances\/[^/]+\/stop$/ },
  expose: { method: 'POST', path: /^\/v1\/instances\/[^/]+\/expose$/ },
  'auth.add': { method: 'POST', path: /^\/v1\/instances\/[^/]+\/auth$/ },
  'auth.remove': { method: 'POST', path: /^\/v1\/instances\/[^/]+\/auth$/ },
  revoke: { method: 'POST', path: /^\/v1\/instances\/[^/]+\/revoke$/ },
  scale: { method: 'POST', path: /^\/v1\/instances\/[^/]+\/scale$/ },
};

/** The id of a proposal: a hash of its instance, action and the proposer's request nonce. */
export function proposalId(instanceId: string, action: unknown, nonce: string): string {
  return `p-${sha256Hex(canonicalJson({ instanceId, action, nonce })).slice(0, 16)}`;
}

export interface HistoryProblem {
  seq: number;
  reason: string;
}

export interface HistoryCheck {
  ok: boolean;
  problems: HistoryProblem[];
  /** The state the chain leads to. */
  owner: string | null;
  team: string[];
  revoked: boolean;
  governance: GovernancePolicy | null;
  head: HistoryHead | null;
}

/**
 * Checks a whole history: order and chain, node signatures (by the key a record names, and by the node's
 * registered key when `nodeKeys` knows it), each request's signature and its match with the operation,
 * and that every author was allowed to act when it did. `head` is what the registry says the last record is.
 */
export function verifyHistory(
  instanceId: string,
  records: HistoryRecord[],
  opts: { head?: HistoryHead | null; nodeKeys?: ReadonlyMap<string, string> } = {},
): HistoryCheck {
  const problems: HistoryProblem[] = [];
  let prev = genesisHash(instanceId);
  let owner: string | null = null;
  let name: string | undefined;
  const team = new Set<string>();
  /** Which code each version ran: a rollback must put back exactly an earlier version's. */
  const codeOf = new Map<number, unknown>();
  let revoked = false;
  let governance: GovernancePolicy | null = null;
  const problem = (seq: number, reason: string) => problems.push({ seq, reason });

  records.forEach((r, i) => {
    if (r.seq !== i) problem(r.seq, `out of order: record ${r.seq} at position ${i} (a record is missing)`);
    if (r.instanceId !== instanceId) problem(r.seq, `belongs to instance ${r.instanceId}`);
    if (r.prev !== prev) problem(r.seq, 'does not chain to the record before it (a record was removed, added or altered)');
    prev = recordHash(r);
    if (!verifyRecord(r, r.signature.key)) problem(r.seq, 'node signature does not match the record (it was altered)');
    const known = opts.nodeKeys?.get(r.node);
    if (known && known !== r.signature.key) problem(r.seq, `signed by ${r.signature.key.slice(0, 12)}…, not by node ${r.node}`);

    // The author's request: signature, body, and that it asked for this operation on this instance.
    if (r.request) {
      const check = verifyEnvelope(r.request.envelope);
      if (!check.ok) problem(r.seq, `request: ${check.reason}`);
      else {
        if (check.publicKey !== r.author) problem(r.seq, 'request is signed by another key than the author');
        if (r.request.body !== undefined && sha256Hex(r.request.body) !== check.bodySha256)
          problem(r.seq, 'request body does not match its signed hash');
        const want = REQUESTS[r.op];
        const path = r.request.envelope.path.split('?')[0] as string;
        if (want && (r.request.envelope.method !== want.method || !want.path.test(path)))
          problem(r.seq, `request ${r.request.envelope.method} ${path} is not a ${r.op}`);
        if (r.op === 'create') {
          const body = parseBody(r.request.body);
          name = typeof body?.name === 'string' ? body.name : undefined;
        } else if (name !== undefined && pathName(path) !== name) problem(r.seq, `request names another instance (${pathName(path)})`);
        if (r.op === 'deploy' && r.detail.artifact !== check.bodySha256)
          problem(r.seq, 'deployed artifact is not the one the request uploaded');
        if (r.op === 'rollback') {
          const to = parseBody(r.request.body)?.version;
          if (to !== r.detail.to) problem(r.seq, 'rollback is not to the version the request names');
          else if (!codeOf.has(Number(to)) || codeOf.get(Number(to)) !== r.detail.artifact)
            problem(r.seq, `rollback puts back code that version ${String(to)} never ran`);
        }
        if (r.op.startsWith('auth.')) {
          const body = parseBody(r.request.body);
          const key = r.op === 'auth.add' ? body?.add : body?.remove;
          if (key !== r.detail.key) problem(r.seq, 'team key is not the one the request names');
        }
      }
    } else if (REQUESTS[r.op]) problem(r.seq, `${r.op} carries no signed request`);

    if ((r.op === 'deploy' || r.op === 'rollback') && typeof r.detail.version === 'number') codeOf.set(r.detail.version, r.detail.artifact);

    // Who may do what, replayed from the start.
    const member = r.author === owner || team.has(r.author);
    switch (r.op) {
      case 'create':
        if (i !== 0) problem(r.seq, 'create is not the first record');
        owner = r.author;
        break;
      case 'auth.add':
      case 'auth.remove':
      case 'revoke':
        if (r.author !== owner) problem(r.seq, `${r.op} by ${short(r.author)}, who is not the owner`);
        else if (revoked) problem(r.seq, `${r.op} after the revocation`);
        if (r.op === 'auth.add' && typeof r.detail.key === 'string') team.add(r.detail.key);
        if (r.op === 'auth.remove' && typeof r.detail.key === 'string') team.delete(r.detail.key);
        if (r.op === 'revoke' && !revoked) {
          revoked = true;
          const g = governancePolicy.safeParse(r.detail.governance);
          governance = g.success ? g.data : null;
          if (r.request && canonicalJson(parseBody(r.request.body)?.governance ?? null) !== canonicalJson(governance))
            problem(r.seq, 'governance policy is not the one the owner signed');
        }
        break;
      case 'ssh.start':
      case 'ssh.end':
        if (r.author !== r.signature.key) problem(r.seq, 'an SSH record is attested by the node itself');
        if (r.op === 'ssh.start') {
          const user = String(r.detail.user ?? '');
          if (revoked) problem(r.seq, 'SSH session after the revocation');
          else if (user !== owner && !team.has(user)) problem(r.seq, `SSH session of ${short(user)}, who may not operate the instance`);
        }
        break;
      case 'governance': {
        const why = checkGovernance(instanceId, r, governance, revoked);
        if (why) problem(r.seq, why);
        const action = r.detail.action as { type?: string; threshold?: number; keys?: string[] } | undefined;
        if (!why && action?.type === 'governance') {
          const g = governancePolicy.safeParse({ threshold: action.threshold, keys: action.keys });
          governance = g.success ? g.data : governance;
        }
        break;
      }
      default:
        if (revoked) problem(r.seq, `${r.op} after the revocation (only governance changes are allowed)`);
        else if (!member) problem(r.seq, `${r.op} by ${short(r.author)}, who may not operate the instance`);
    }
  });

  const last = records.at(-1);
  const head = last ? { seq: last.seq, hash: recordHash(last) } : null;
  if (opts.head !== undefined && opts.head !== null) {
    if (!head || opts.head.seq !== head.seq || opts.head.hash !== head.hash)
      problem(opts.head.seq, `the registry's head names record ${opts.head.seq}, which is not the last record of the chain`);
  }
  return { ok: problems.length === 0, problems, owner, team: [...team], revoked, governance, head };
}

/**
 * A governance record: the approvals are the proposal request (first) and approve requests for its id, all
 * valid, by distinct keys of the policy in force, at least `threshold` of them.
 */
function checkGovernance(instanceId: string, r: HistoryRecord, policy: GovernancePolicy | null, revoked: boolean): string | undefined {
  if (!revoked) return 'governance change of an instance that was not revoked';
  if (!policy) return 'governance change of an instance revoked without governance';
  const id = r.detail.proposal;
  const approvals = r.approvals ?? [];
  const [first, ...rest] = approvals;
  if (typeof id !== 'string' || !first) return 'governance change without its proposal';
  const signers = new Set<string>();
  const proposal = verifyEnvelope(first.envelope);
  if (!proposal.ok) return `proposal: ${proposal.reason}`;
  const nonce = first.envelope.headers[SIGNATURE_HEADERS.nonce] ?? '';
  if (proposalId(instanceId, r.detail.action, nonce) !== id) return 'proposal id does not derive from the proposed action';
  const action = r.detail.action as { type?: string; artifact?: string; cmd?: string } | undefined;
  if (action?.type === 'deploy') {
    // Proposed by uploading the code: the signed content hash is the artifact, the command a signed header.
    const cmd = first.envelope.headers['x-allegra-cmd'];
    if (action.artifact !== proposal.bodySha256) return 'proposed artifact is not the one the proposer uploaded';
    if ((cmd === undefined ? undefined : decodeURIComponent(cmd)) !== action.cmd)
      return 'proposed command is not the one the proposer signed';
  } else {
    if (sha256Hex(first.body) !== proposal.bodySha256) return 'proposal body does not match its signed hash';
    if (canonicalJson(parseBody(first.body)?.action ?? null) !== canonicalJson(action ?? null))
      return 'the applied action is not the one proposed';
  }
  signers.add(proposal.publicKey);
  for (const a of rest) {
    const g = checkGrant(a);
    if (!g.ok) return `approval: ${g.reason}`;
    if (g.method !== 'POST' || !g.path.endsWith(`/proposals/${id}/approve`)) return `approval ${g.method} ${g.path} is not for ${id}`;
    signers.add(g.signer);
  }
  const valid = [...signers].filter((k) => policy.keys.includes(k));
  if (valid.length !== signers.size) return 'approved by a key outside the governance policy';
  if (valid.length < policy.threshold) return `only ${valid.length} of the ${policy.threshold} required governance signatures`;
  return undefined;
}

function parseBody(body: string | undefined): Record<string, unknown> | undefined {
  if (!body) return undefined;
  try {
    const v = JSON.parse(body) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const short = (key: string) => `${key.slice(0, 12)}…`;
