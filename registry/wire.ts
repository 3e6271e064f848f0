/**
 * The embedded registry's wire protocol (HTTP/1.1 with JSON bodies on the host's Unix socket): request
 * schemas, the body limit and the credential header. Shared by the host and its clients.
 */
import { z } from 'zod';

/** Same as etcd's default `--max-request-bytes`, so a request that one backend takes the other takes too. */
export const MAX_REQUEST_BYTES = 1_572_864;

/** Watches are GETs; everything else is a POST of one JSON document. */
export const AUTH_HEADER = 'authorization';

export function bearer(token: string): string {
  return `Bearer ${token}`;
}

export function tokenOf(header: string | undefined): string | undefined {
  if (!header?.startsWith('Bearer ')) return undefined;
  return header.slice('Bearer '.length).trim();
}

const key = z.string().min(1);

const compare = z.discriminatedUnion('target', [
  z.object({ key, target: z.literal('modRevision'), equals: z.number().int().nonnegative() }),
  z.object({ key, target: z.literal('version'), equals: z.number().int().nonnegative() }),
  z.object({ key, target: z.literal('value'), equals: z.string() }),
]);

const op = z.discriminatedUnion('type', [
  z.object({ type: z.literal('put'), key, value: z.string(), lease: z.string().min(1).max(64).optional() }),
  z.object({ type: z.literal('delete'), key }),
  z.object({ type: z.literal('deletePrefix'), prefix: z.string() }),
]);

export const wire = {
  get: z.object({ key }),
  list: z.object({ prefix: z.string() }),
  txn: z.object({ compare: z.array(compare), success: z.array(op), failure: z.array(op).optional() }),
  leaseGrant: z.object({ ttlMs: z.number().finite() }),
  leaseId: z.object({ id: z.string().min(1).max(64) }),
};
