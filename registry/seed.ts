/**
 * Registry state as real agents would have written it, for tools that seed a registry without running
 * agents (gateway tests, benchmarks, simulations): an instance with its owner's create request, its network
 * route carrying that request, a node with its key, and replica records signed by that node. Gateways
 * serve only such properly signed records, so hand-built records would be (rightly) ignored.
 */
import { instanceIdFor, makeGrant } from '../protocol/grants.js';
import { keys } from '../protocol/keys.js';
import { signRecord } from '../protocol/records.js';
import type { Op } from '../protocol/registry.js';
import { generateKeyPair, type KeyPair } from '../protocol/signing.js';
import {
  type InstanceSpec,
  type NodeRecord,
  newInstanceSpec,
  type ReplicaRecord,
  type RoutePolicy,
  type RouteRecord,
} from '../protocol/types.js';

export interface SeededInstance {
  spec: InstanceSpec;
  route: RouteRecord;
  ops: Op[];
}

/** An instance named `name` owned by `owner`, and its route `<name>.<baseDomain>`. */
export function seedInstance(
  owner: KeyPair,
  name: string,
  baseDomain: string,
  fields: Partial<InstanceSpec> & { policy?: RoutePolicy } = {},
  now = Date.now(),
): SeededInstance {
  const { policy, ...specFields } = fields;
  const grant = makeGrant(owner, 'POST', '/v1/instances', { name, ...(policy ? { policy } : {}) });
  const spec = newInstanceSpec({ ...specFields, id: instanceIdFor(grant), name, owner: owner.publicKeyHex, createGrant: grant }, now);
  const host = `${name}.${baseDomain}`;
  const route: RouteRecord = {
    host,
    instanceId: spec.id,
    instanceName: name,
    kind: 'network',
    createdAt: now,
    grants: [grant],
    ...(policy ? { policy } : {}),
  };
  return {
    spec,
    route,
    ops: [
      { type: 'put', key: keys.instance(name), value: JSON.stringify(spec) },
      { type: 'put', key: keys.route(host), value: JSON.stringify(route) },
    ],
  };
}

/**
 * The instance's route after its owner's `allegra expose` (HTTPS, a certificate ordered for it): the
 * create grant kept, the expose request added, as the agent writes it. With `domain`, a custom domain's route.
 */
export function seedExpose(
  owner: KeyPair,
  instance: SeededInstance,
  body: { redirectHttp: boolean; domain?: string; port?: number },
  now = Date.now(),
): { route: RouteRecord; op: Op } {
  const grant = makeGrant(owner, 'POST', `/v1/instances/${encodeURIComponent(instance.spec.name)}/expose`, body);
  const host = body.domain ?? instance.route.host;
  const base: RouteRecord =
    host === instance.route.host
      ? instance.route
      : { host, instanceId: instance.spec.id, instanceName: instance.spec.name, kind: 'custom', createdAt: now, grants: [] };
  const route: RouteRecord = {
    ...base,
    tls: { redirectHttp: body.redirectHttp },
    ...(body.port !== undefined ? { port: body.port } : {}),
    grants: [...(base.grants ?? []), grant],
  };
  return { route, op: { type: 'put', key: keys.route(host), value: JSON.stringify(route) } };
}

export interface SeededNode {
  id: string;
  keyPair: KeyPair;
  record: NodeRecord;
  op: Op;
}

/** A node record (without a lease: seeded nodes do not expire) and the key its replica records are signed with. */
export function seedNode(id: string, fields: Partial<NodeRecord> = {}, keyPair = generateKeyPair()): SeededNode {
  const record: NodeRecord = {
    id,
    rpc: 'http://127.0.0.1:1',
    publicKey: keyPair.publicKeyHex,
    region: 'local',
    capacity: 16,
    load: 0,
    startedAt: Date.now(),
    ...fields,
  };
  return { id, keyPair, record, op: { type: 'put', key: keys.node(id), value: JSON.stringify(record) } };
}

/** A healthy replica of `instanceId` on `node`, signed by it. */
export function seedReplica(
  node: SeededNode,
  instanceId: string,
  slot: number,
  endpoint: string,
  fields: Partial<ReplicaRecord> = {},
): { record: ReplicaRecord; op: Op } {
  const record = signRecord(node.keyPair, {
    instanceId,
    nodeId: node.id,
    slot,
    endpoint,
    healthy: true,
    version: 1,
    pid: null,
    restarts: 0,
    updatedAt: Date.now(),
    ...fields,
  } satisfies ReplicaRecord);
  return { record, op: { type: 'put', key: keys.replica(instanceId, node.id, slot), value: JSON.stringify(record) } };
}
