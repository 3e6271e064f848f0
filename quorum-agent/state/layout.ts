/**
 * Where an instance's state lives in the registry, and the checksum that lets every quorum member prove its
 * copy is the registry's.
 *
 *   state/<instanceId>/meta      {"checksum":…,"bytes":…,"keys":…}  — rewritten by every committed write
 *   state/<instanceId>/k/<key>   the value, base64 (registry values are text; values are bytes)
 *
 * Every write is one registry transaction that changes the keys AND the meta record, guarded by the meta
 * record's revision: so the meta record always describes exactly the state committed with it, and a
 * writer's view of the state is provably current when its transaction succeeds. The checksum is a
 * LiteFS-style rolling checksum: the XOR of a hash of every (key, value) pair, so it depends only on the
 * state (not on history) and is updated incrementally (XOR the old pair out, the new one in).
 */
import { createHash } from 'node:crypto';
import { PREFIX } from '../../protocol/keys.js';

export const MAX_KEY_BYTES = 512;
export const MAX_VALUE_BYTES = 1024 * 1024;

export const stateKeys = {
  root: (instanceId: string) => `${PREFIX.state}${instanceId}/`,
  meta: (instanceId: string) => `${PREFIX.state}${instanceId}/meta`,
  values: (instanceId: string) => `${PREFIX.state}${instanceId}/k/`,
  value: (instanceId: string, key: string) => `${PREFIX.state}${instanceId}/k/${key}`,
};

export interface StateMeta {
  /** XOR of pairHash over every (key, value), hex. */
  checksum: string;
  /** Sum of key and value sizes (bytes), for the quota. */
  bytes: number;
  keys: number;
}

export const EMPTY_CHECKSUM = '0'.repeat(32);
export const EMPTY_META: StateMeta = { checksum: EMPTY_CHECKSUM, bytes: 0, keys: 0 };

/** Why a key is not acceptable, or undefined. */
export function keyProblem(key: string): string | undefined {
  if (key.length === 0) return 'keys are 1 to 512 bytes';
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) return 'keys are at most 512 bytes';
  if (key.includes('\0')) return 'keys may not contain NUL';
  if (key.includes('\uFFFD')) return 'keys must be valid UTF-8';
  return undefined;
}

/** 128-bit hash of one (key, value) pair; value is the stored (base64) text. */
export function pairHash(key: string, value: string): Buffer {
  return createHash('sha256').update(key).update('\0').update(value).digest().subarray(0, 16);
}

export function xorInto(acc: Buffer, h: Buffer): void {
  for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] as number) ^ (h[i] as number);
}

/** The checksum after replacing `before` (or nothing) by `after` (or nothing) for `key`. */
export function nextChecksum(checksum: string, key: string, before: string | undefined, after: string | undefined): string {
  const acc = Buffer.from(checksum, 'hex');
  if (before !== undefined) xorInto(acc, pairHash(key, before));
  if (after !== undefined) xorInto(acc, pairHash(key, after));
  return acc.toString('hex');
}

/** The checksum of a whole state, from scratch. */
export function checksumOf(entries: Iterable<[string, string]>): string {
  const acc = Buffer.alloc(16);
  for (const [key, value] of entries) xorInto(acc, pairHash(key, value));
  return acc.toString('hex');
}

export function entryBytes(key: string, value: string): number {
  // Quota counts what the app stored: key bytes plus decoded value bytes.
  return Buffer.byteLength(key) + Math.floor((value.length * 3) / 4) - (value.endsWith('==') ? 2 : value.endsWith('=') ? 1 : 0);
}

export function parseMeta(raw: string | undefined): StateMeta | undefined {
  if (raw === undefined) return undefined;
  try {
    const m = JSON.parse(raw) as StateMeta;
    if (typeof m.checksum === 'string' && /^[0-9a-f]{32}$/.test(m.checksum) && Number.isInteger(m.bytes) && Number.isInteger(m.keys))
      return m;
  } catch {
    /* not a meta record */
  }
  return undefined;
}
