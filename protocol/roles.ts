/**
 * Who may read and write what in the registry: the one table both backends enforce. The embedded host checks
 * every request against it; `allegra registry setup-auth` turns it into etcd roles with prefix permissions.
 *
 * - `admin`: the devnet host process and operator tooling; everything.
 * - `agent`: quorum agents; the cluster records they maintain, read access to what they report on.
 * - `gateway`: gateways; read access to routing state, and the certificate machinery (private keys included).
 * - A replica has no credential at all.
 *
 * Default deny: a key outside every listed prefix is admin-only. Grants add up (as in etcd): a request is
 * allowed if one grant covers it. A prefix request (list, watch, deletePrefix) must lie within one granted
 * prefix.
 */

import { PREFIX } from './keys.js';
import type { TxnRequest } from './registry.js';

export const ROLES = ['admin', 'agent', 'gateway'] as const;
export type Role = (typeof ROLES)[number];
/** The roles that are limited by the table (admin is not). */
export type LimitedRole = Exclude<Role, 'admin'>;

export interface Grant {
  prefix: string;
  read: boolean;
  write: boolean;
}

const rw = (prefix: string): Grant => ({ prefix, read: true, write: true });
const r = (prefix: string): Grant => ({ prefix, read: true, write: false });

const CLUSTER = [PREFIX.nodes, PREFIX.quorums, PREFIX.instances, PREFIX.replicas, PREFIX.routes, PREFIX.leaders];

export const GRANTS: Readonly<Record<LimitedRole, readonly Grant[]>> = {
  agent: [
    ...CLUSTER.map(rw),
    r(PREFIX.config),
    r(PREFIX.certs),
    r(PREFIX.certStatus),
    r(PREFIX.gateways),
    rw(PREFIX.instanceStatus),
    rw(PREFIX.state),
    rw(PREFIX.history),
    rw(PREFIX.usage),
    r(PREFIX.load),
    rw(PREFIX.scale),
    rw(PREFIX.governance),
  ],
  gateway: [
    ...CLUSTER.map(r),
    r(PREFIX.config),
    rw(PREFIX.certs),
    rw(PREFIX.certStatus),
    rw(PREFIX.certKeys),
    rw(PREFIX.acme),
    rw(PREFIX.certLocks),
    rw(PREFIX.gateways),
    r(PREFIX.instanceStatus),
    r(PREFIX.history),
    rw(PREFIX.load),
    r(PREFIX.scale),
  ],
};

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

export type Access = 'read' | 'write';

/** May `role` read (or write) `key`? */
export function mayAccessKey(role: Role, access: Access, key: string): boolean {
  if (role === 'admin') return true;
  return GRANTS[role].some((g) => g[access] && key.startsWith(g.prefix));
}

/** May `role` read (or write) every key under `prefix`? */
export function mayAccessPrefix(role: Role, access: Access, prefix: string): boolean {
  if (role === 'admin') return true;
  return GRANTS[role].some((g) => g[access] && prefix.startsWith(g.prefix));
}

/** What a refused request tried: the operation and the key (or prefix) it was refused on. */
export interface Denial {
  role: Role;
  operation: 'get' | 'list' | 'watch' | 'compare' | 'put' | 'delete' | 'deletePrefix' | 'revoke a lease holding';
  key: string;
}

/** The error both backends raise for a refused request: it names the role, the operation and the key. */
export class RegistryAccessError extends Error {
  readonly role: Role;
  readonly operation: Denial['operation'];
  readonly key: string;
  constructor(denial: Denial) {
    super(`registry: permission denied: role "${denial.role}" may not ${denial.operation} "${denial.key}"`);
    this.name = 'RegistryAccessError';
    this.role = denial.role;
    this.operation = denial.operation;
    this.key = denial.key;
  }
}

/** Raised when a request carries no credential, or one the registry does not know. */
export class RegistryAuthError extends Error {
  constructor(detail: string) {
    super(`registry: unauthenticated: ${detail}`);
    this.name = 'RegistryAuthError';
  }
}

/**
 * The first part of a transaction `role` may not perform, or null. Like etcd, both branches are checked
 * whatever the compares decide: compares need read, operations write.
 */
export function txnDenial(role: Role, request: TxnRequest): Denial | null {
  // Operations first: a delete sent as "compare existence, then delete" is reported as the delete it is.
  for (const op of [...request.success, ...(request.failure ?? [])]) {
    if (op.type === 'deletePrefix') {
      if (!mayAccessPrefix(role, 'write', op.prefix)) return { role, operation: 'deletePrefix', key: op.prefix };
    } else if (!mayAccessKey(role, 'write', op.key)) return { role, operation: op.type, key: op.key };
  }
  for (const c of request.compare) if (!mayAccessKey(role, 'read', c.key)) return { role, operation: 'compare', key: c.key };
  return null;
}

/** A revocation deletes the lease's keys, so it needs write access to each of them (as in etcd). */
export function revokeDenial(role: Role, keys: Iterable<string>): Denial | null {
  for (const key of keys) if (!mayAccessKey(role, 'write', key)) return { role, operation: 'revoke a lease holding', key };
  return null;
}

export function readDenial(role: Role, operation: 'get' | 'list' | 'watch', keyOrPrefix: string): Denial | null {
  const ok = operation === 'get' ? mayAccessKey(role, 'read', keyOrPrefix) : mayAccessPrefix(role, 'read', keyOrPrefix);
  return ok ? null : { role, operation, key: keyOrPrefix };
}
