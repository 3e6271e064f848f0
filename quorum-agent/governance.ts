/**
 * Governance of a revoked instance: a change is proposed by one governance key (its signed request is the
 * first signature), approved by others (each a signed request naming the proposal's id), and applied in the
 * same transaction that removes the proposal once M distinct keys of the policy signed it. The applied
 * change's history record carries every one of those signed requests, so anyone can re-count them.
 * Pending proposals live under `governance/<instance>/<id>`.
 */
import { z } from 'zod';
import { AllegraError } from '../protocol/errors.js';
import { checkGrant, type Grant } from '../protocol/grants.js';
import { proposalId } from '../protocol/history.js';
import { keys } from '../protocol/keys.js';
import type { Registry } from '../protocol/registry.js';
import { artifactRef, governancePolicy, grant as grantSchema, parseRecord } from '../protocol/schemas.js';
import { SIGNATURE_HEADERS, verifyEnvelope } from '../protocol/signing.js';
import type { ArtifactRef, InstanceSpec } from '../protocol/types.js';
import { type InstanceService, revokedMessage } from './instances.js';

export const proposalAction = z.discriminatedUnion('type', [
  z.object({ type: z.literal('start') }).strict(),
  z.object({ type: z.literal('stop') }).strict(),
  z.object({ type: z.literal('delete') }).strict(),
  z.object({ type: z.literal('governance'), threshold: z.number().int(), keys: z.array(z.string()) }).strict(),
  z.object({ type: z.literal('deploy'), artifact: z.string().regex(/^[0-9a-f]{64}$/), cmd: z.string().max(4096).optional() }).strict(),
]);
export type ProposalAction = z.infer<typeof proposalAction>;

/** Body of `POST /v1/instances/:name/proposals` (deploys are proposed by uploading the code instead). */
export const proposeRequest = z.object({ action: proposalAction }).strict();

export const proposalRecord = z.object({
  id: z.string(),
  instanceId: z.string(),
  instanceName: z.string(),
  action: proposalAction,
  /** Where the proposed artifact is held (deploys). */
  artifact: artifactRef.optional(),
  proposer: z.string(),
  proposedAt: z.number(),
  /** The proposal request first, then the approve requests. */
  approvals: z.array(grantSchema).max(64),
});
export type ProposalRecord = z.infer<typeof proposalRecord>;

export interface ProposalView {
  id: string;
  action: ProposalAction;
  proposer: string;
  proposedAt: number;
  approvedBy: string[];
  needed: number;
}

export interface ProposalOutcome {
  proposal: ProposalView;
  applied: boolean;
  instance?: InstanceSpec;
}

export class Governance {
  constructor(
    private readonly registry: Registry,
    private readonly service: InstanceService,
  ) {}

  /** The spec of a governed instance, for a governance key; refuses everything else with the reason. */
  private async governed(name: string, signer: string): Promise<InstanceSpec> {
    const { spec } = await this.service.read(name);
    if (!spec.immutable) throw new AllegraError('refused', `instance "${name}" is not revoked: its owner and team keys change it directly`);
    if (!spec.governance) throw new AllegraError('refused', revokedMessage(spec));
    if (!spec.governance.keys.includes(signer))
      throw new AllegraError('forbidden', `key ${signer.slice(0, 12)}… is not a governance key of instance "${name}"`);
    return spec;
  }

  /** Records a proposal (its request is the proposer's signature) and applies it if that is already enough. */
  async propose(name: string, signer: string, action: ProposalAction, request: Grant, artifact?: ArtifactRef): Promise<ProposalOutcome> {
    const spec = await this.governed(name, signer);
    if (action.type === 'governance') {
      const policy = governancePolicy.safeParse({ threshold: action.threshold, keys: action.keys });
      if (!policy.success) throw new AllegraError('bad_request', `governance: ${policy.error.issues.map((i) => i.message).join('; ')}`);
    }
    const nonce = request.envelope.headers[SIGNATURE_HEADERS.nonce] ?? '';
    const record: ProposalRecord = {
      id: proposalId(spec.id, action, nonce),
      instanceId: spec.id,
      instanceName: spec.name,
      action,
      ...(artifact ? { artifact } : {}),
      proposer: signer,
      proposedAt: Date.now(),
      approvals: [request],
    };
    const key = keys.proposal(spec.id, record.id);
    const res = await this.registry.txn({
      compare: [{ key, target: 'version', equals: 0 }],
      success: [{ type: 'put', key, value: JSON.stringify(record) }],
    });
    if (!res.succeeded) throw new AllegraError('conflict', `proposal ${record.id} exists already`);
    return this.applyIfApproved(spec, record);
  }

  /** Adds one governance key's signature to a proposal; applies it once M distinct keys signed. */
  async approve(name: string, signer: string, id: string, request: Grant): Promise<ProposalOutcome> {
    const spec = await this.governed(name, signer);
    for (let attempt = 0; attempt < 8; attempt++) {
      const kv = await this.registry.get(keys.proposal(spec.id, id));
      const record = parseRecord(proposalRecord, kv?.value);
      if (!kv || !record) throw new AllegraError('not_found', `no pending proposal ${id} for instance "${name}"`);
      if (signersOf(record).includes(signer))
        throw new AllegraError('refused', `key ${signer.slice(0, 12)}… already signed proposal ${id}`);
      const next: ProposalRecord = { ...record, approvals: [...record.approvals, request] };
      const res = await this.registry.txn({
        compare: [{ key: kv.key, target: 'modRevision', equals: kv.modRevision }],
        success: [{ type: 'put', key: kv.key, value: JSON.stringify(next) }],
      });
      if (res.succeeded) return this.applyIfApproved(spec, next);
    }
    throw new AllegraError('conflict', `proposal ${id} is being approved concurrently; try again`);
  }

  async list(name: string, signer: string): Promise<ProposalView[]> {
    const { spec } = await this.service.authorized(name, signer);
    const { items } = await this.registry.list(keys.proposalsOf(spec.id));
    return items.flatMap((kv) => {
      const r = parseRecord(proposalRecord, kv.value);
      return r ? [view(r, spec)] : [];
    });
  }

  /** Artifacts of pending deploy proposals: their blobs must outlive the garbage collector's grace period. */
  async pendingArtifacts(): Promise<Set<string>> {
    const { items } = await this.registry.list('governance/');
    const out = new Set<string>();
    for (const kv of items) {
      const r = parseRecord(proposalRecord, kv.value);
      if (r?.action.type === 'deploy') out.add(r.action.artifact);
    }
    return out;
  }

  private async applyIfApproved(spec: InstanceSpec, record: ProposalRecord): Promise<ProposalOutcome> {
    const policy = spec.governance;
    const approvedBy = signersOf(record).filter((k) => policy?.keys.includes(k));
    if (!policy || approvedBy.length < policy.threshold) return { proposal: view(record, spec), applied: false };
    const key = keys.proposal(spec.id, record.id);
    const { action } = record;
    if (action.type === 'delete') {
      await this.service.delete(spec.name, record.proposer, true);
      return { proposal: view(record, spec), applied: true };
    }
    const kv = await this.registry.get(key);
    if (!kv) throw new AllegraError('conflict', `proposal ${record.id} was applied or withdrawn meanwhile`);
    const instance = await this.service.commit(
      spec.name,
      (s) => {
        if (s.id !== spec.id || !s.immutable || !s.governance)
          throw new AllegraError('conflict', `instance "${spec.name}" changed meanwhile`);
      },
      {
        next: (s) => applyAction(s, record),
        entry: () => ({
          op: 'governance',
          author: record.proposer,
          approvals: record.approvals,
          detail: { proposal: record.id, action, approvedBy },
        }),
        ops: [{ type: 'delete', key }],
        compare: [{ key, target: 'modRevision', equals: kv.modRevision }],
      },
    );
    return { proposal: view(record, instance), applied: true, instance };
  }
}

function applyAction(spec: InstanceSpec, record: ProposalRecord): InstanceSpec {
  const { action } = record;
  switch (action.type) {
    case 'start':
      return { ...spec, state: 'running' };
    case 'stop':
      return { ...spec, state: 'stopped' };
    case 'governance':
      return { ...spec, governance: { threshold: action.threshold, keys: action.keys } };
    case 'deploy': {
      if (!record.artifact) throw new AllegraError('internal', 'deploy proposal without its artifact');
      return { ...spec, artifact: record.artifact, cmd: action.cmd ?? spec.cmd, version: spec.version + 1 };
    }
    default:
      return spec;
  }
}

/**
 * Distinct keys that validly signed a proposal: the proposal request (an upload for deploys, whose signature
 * covers the artifact's hash rather than a kept body), then approve requests naming its id.
 */
function signersOf(record: ProposalRecord): string[] {
  const out = new Set<string>();
  for (const [i, g] of record.approvals.entries()) {
    if (i === 0) {
      const check = verifyEnvelope(g.envelope);
      if (check.ok) out.add(check.publicKey);
      continue;
    }
    const check = checkGrant(g);
    if (check.ok && check.method === 'POST' && check.path.endsWith(`/proposals/${record.id}/approve`)) out.add(check.signer);
  }
  return [...out];
}

function view(r: ProposalRecord, spec: InstanceSpec): ProposalView {
  return {
    id: r.id,
    action: r.action,
    proposer: r.proposer,
    proposedAt: r.proposedAt,
    approvedBy: signersOf(r),
    needed: spec.governance?.threshold ?? 0,
  };
}
