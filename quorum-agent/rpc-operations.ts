/**
 * RPC routes of the developer's journey beyond create/deploy/expose: team keys, history, revocation and
 * governance proposals. Mounted by rpc.ts (`extraRoutes`); every route checks its signature first.
 */
import type { Hono } from 'hono';
import { AllegraError } from '../protocol/errors.js';
import { keys } from '../protocol/keys.js';
import { sshPublicKeyLine } from '../protocol/openssh.js';
import type { RecordSignature } from '../protocol/records.js';
import { authRequest, parseRecord, revokeRequest } from '../protocol/schemas.js';
import { type Attestation, specHash } from '../protocol/spec-hash.js';
import { usageRecord } from '../protocol/usage.js';
import { type Governance, proposeRequest } from './governance.js';
import { parseWith, type RpcDeps, receiveArtifact, type SignedRequests } from './rpc.js';

export interface OperationDeps {
  governance: Governance;
  /** This node's signed account of an instance's replicas here (`allegra verify`). */
  attest: (instanceId: string, nonce: string) => Attestation & { signature: RecordSignature };
}

export function operationRoutes(deps: RpcDeps, ops: OperationDeps): (app: Hono, requests: SignedRequests) => void {
  const { service } = deps;
  return (app, { signed, signedNoBody, signedJson }) => {
    app.post('/v1/instances/:name/auth', async (c) => {
      const { signer, body, grant } = await signedJson(c);
      const { spec, changed } = await service.auth(c.req.param('name'), signer, parseWith(authRequest, body), grant);
      return c.json({ owner: spec.owner, keys: spec.authorized, changed });
    });

    app.get('/v1/instances/:name/auth', async (c) => {
      const { signer } = await signedNoBody(c);
      const { spec } = await service.authorized(c.req.param('name'), signer);
      return c.json({ owner: spec.owner, keys: spec.authorized, immutable: spec.immutable, governance: spec.governance ?? null });
    });

    app.post('/v1/instances/:name/revoke', async (c) => {
      const { signer, body, grant } = await signedJson(c);
      const spec = await service.revoke(c.req.param('name'), signer, parseWith(revokeRequest, body), grant);
      return c.json({ instance: spec });
    });

    app.get('/v1/instances/:name/history', async (c) => {
      const { signer } = await signedNoBody(c);
      const { spec } = await service.authorized(c.req.param('name'), signer);
      const { records, head, malformed } = await service.history.read(spec.id);
      const nodes = [...new Set(records.map((r) => r.node))].flatMap((id) => {
        const n = deps.view.node(id);
        return n ? [{ id, publicKey: n.publicKey }] : [];
      });
      return c.json({ instanceId: spec.id, name: spec.name, head, records, malformed, nodes });
    });

    /** Where to reach each replica over SSH: its node's SSH address and host key (the node's own key). */
    app.get('/v1/instances/:name/ssh', async (c) => {
      const { signer } = await signedNoBody(c);
      const { spec } = await service.authorizedToChange(c.req.param('name'), signer);
      const status = await service.describe(spec);
      const replicas = status.replicas.flatMap((r) => {
        const node = deps.view.node(r.nodeId);
        if (!node?.ssh) return [];
        return [{ slot: r.slot, nodeId: r.nodeId, healthy: r.healthy, ssh: node.ssh, hostKey: sshPublicKeyLine(node.publicKey) }];
      });
      return c.json({ name: spec.name, replicas: replicas.sort((a, b) => a.slot - b.slot) });
    });

    /** Signed usage records of every node that served the instance. */
    app.get('/v1/instances/:name/usage', async (c) => {
      const { signer } = await signedNoBody(c);
      const { spec } = await service.authorized(c.req.param('name'), signer);
      const { items } = await deps.view.registry.list(keys.usageOf(spec.id));
      const records = items.flatMap((kv) => {
        const r = parseRecord(usageRecord, kv.value);
        return r ? [r] : [];
      });
      const nodes = records.flatMap((r) => {
        const n = deps.view.node(r.nodeId);
        return n ? [{ id: n.id, publicKey: n.publicKey }] : [];
      });
      return c.json({ instanceId: spec.id, records, nodes });
    });

    /**
     * Unsigned, for anyone (`allegra verify`): what the registry records of an instance (its owner's create
     * request, artifact and spec hashes, never the spec itself) and its quorum members' addresses and keys.
     */
    app.get('/v1/public/instances/:name', async (c) => {
      const { spec } = await service.read(c.req.param('name'));
      const quorum = deps.view.quorumOf(spec.id);
      const members = (quorum?.members ?? []).map((id) => {
        const n = deps.view.node(id);
        return { id, rpc: n?.rpc ?? null, publicKey: n?.publicKey ?? null };
      });
      return c.json({
        name: spec.name,
        id: spec.id,
        owner: spec.owner,
        version: spec.version,
        state: spec.state,
        immutable: spec.immutable,
        artifact: spec.artifact?.sha256 ?? null,
        specHash: specHash(spec),
        createGrant: spec.createGrant ?? null,
        quorum: quorum ? { id: quorum.id, members } : null,
      });
    });

    /** Unsigned: this member's signed account of the instance's replicas it runs, over the caller's nonce. */
    app.get('/v1/public/instances/:name/attestation', async (c) => {
      const nonce = new URL(c.req.url).searchParams.get('nonce') ?? '';
      if (!/^[0-9a-f]{32,64}$/.test(nonce)) throw new AllegraError('bad_request', 'nonce must be 32 to 64 hex characters');
      const { spec } = await service.read(c.req.param('name'));
      return c.json(ops.attest(spec.id, nonce));
    });

    app.get('/v1/instances/:name/proposals', async (c) => {
      const { signer } = await signedNoBody(c);
      return c.json({ proposals: await ops.governance.list(c.req.param('name'), signer) });
    });

    app.post('/v1/instances/:name/proposals', async (c) => {
      const { signer, body, grant } = await signedJson(c);
      const { action } = parseWith(proposeRequest, body);
      if (action.type === 'deploy')
        throw new AllegraError('bad_request', 'a deploy is proposed by uploading its code (allegra propose NAME --deploy PATH)');
      return c.json(await ops.governance.propose(c.req.param('name'), signer, action, grant), 201);
    });

    /** A deploy proposal: the code is uploaded, checked and replicated now; committed once approved. */
    app.put('/v1/instances/:name/proposals/code', async (c) => {
      const name = c.req.param('name');
      const { signer, bodySha256, envelope } = signed(c);
      const { spec } = await service.read(name);
      if (!spec.governance?.keys.includes(signer))
        throw new AllegraError(
          spec.governance ? 'forbidden' : 'refused',
          `key ${signer.slice(0, 12)}… may not propose changes of "${name}"`,
        );
      const blob = await receiveArtifact(c, deps, bodySha256);
      const { artifact } = await service.replicateArtifact(spec, blob, deps.pushTo);
      const cmdHeader = c.req.header('x-allegra-cmd');
      const cmd = cmdHeader === undefined ? undefined : decodeURIComponent(cmdHeader);
      const action = { type: 'deploy' as const, artifact: blob.sha256, ...(cmd === undefined ? {} : { cmd }) };
      return c.json(await ops.governance.propose(name, signer, action, { envelope, body: '' }, artifact), 201);
    });

    app.post('/v1/instances/:name/proposals/:id/approve', async (c) => {
      const { signer, grant } = await signedNoBody(c);
      return c.json(await ops.governance.approve(c.req.param('name'), signer, c.req.param('id'), grant));
    });
  };
}
