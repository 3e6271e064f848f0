/**
 * One unprivileged uid (and the gid of the same number) per instance, from a range the operator gives the
 * agent. The mapping lives in the agent's data dir so a restarted agent runs an instance under the uid
 * that owns its files; it is released when the instance is deleted and only then may be handed out again.
 * Agents that share a host need disjoint ranges (`allegra devnet` gives each of its agents its own).
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';

export interface UidRange {
  first: number;
  count: number;
}

export const DEFAULT_UID_RANGE: UidRange = { first: 200_000, count: 10_000 };

/** Highest id that fits the kernel's uid_t and stays clear of the (uid_t)-1 "no change" value. */
const MAX_ID = 0xffff_fffe;

/** Parses `FIRST-LAST` or `FIRST+COUNT`, e.g. `200000-209999` or `200000+10000`. */
export function parseUidRange(value: string): UidRange {
  const m = /^(\d+)([-+])(\d+)$/.exec(value.trim());
  if (!m) throw new Error(`uid range expects FIRST-LAST or FIRST+COUNT, e.g. 200000-209999 (got "${value}")`);
  const first = Number(m[1]);
  const count = m[2] === '+' ? Number(m[3]) : Number(m[3]) - first + 1;
  return checkRange({ first, count });
}

/** A range is usable when it holds at least one id, never root and never the agent's own uid. */
export function checkRange(range: UidRange, agentUid: number | undefined = process.getuid?.()): UidRange {
  const last = range.first + range.count - 1;
  if (!Number.isSafeInteger(range.first) || !Number.isSafeInteger(range.count) || range.count < 1 || range.first < 1 || last > MAX_ID)
    throw new Error(`uid range ${range.first}+${range.count} is not a range of ids from 1 to ${MAX_ID}`);
  if (agentUid !== undefined && agentUid >= range.first && agentUid <= last)
    throw new Error(`uid range ${range.first}-${last} contains the agent's own uid ${agentUid}`);
  return range;
}

const saved = z.object({ range: z.object({ first: z.number(), count: z.number() }), uids: z.record(z.string(), z.number().int()) });

export class UidAllocator {
  private readonly uids = new Map<string, number>();
  private readonly taken = new Set<number>();

  constructor(
    private readonly file: string,
    readonly range: UidRange,
  ) {
    checkRange(range);
    let raw: string | undefined;
    try {
      raw = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (raw === undefined) return;
    const parsed = saved.safeParse(JSON.parse(raw));
    if (!parsed.success) throw new Error(`${file} is not a uid allocation file; move it away to start afresh`);
    for (const [instanceId, uid] of Object.entries(parsed.data.uids)) {
      // Ids from an earlier, different range stay with their instances: their files are owned by them.
      if (uid < 1 || uid === process.getuid?.()) throw new Error(`${file} gives ${instanceId} the forbidden uid ${uid}`);
      this.uids.set(instanceId, uid);
      this.taken.add(uid);
    }
  }

  /** The instance's uid, allocating (and persisting) one on first use. */
  allocate(instanceId: string): number {
    const held = this.uids.get(instanceId);
    if (held !== undefined) return held;
    for (let i = 0; i < this.range.count; i++) {
      const uid = this.range.first + i;
      if (this.taken.has(uid)) continue;
      this.uids.set(instanceId, uid);
      this.taken.add(uid);
      this.save();
      return uid;
    }
    throw new Error(
      `no free uid left in ${this.range.first}-${this.range.first + this.range.count - 1} (${this.uids.size} instances hold one)`,
    );
  }

  get(instanceId: string): number | undefined {
    return this.uids.get(instanceId);
  }

  /** Instances that hold a uid. */
  holders(): string[] {
    return [...this.uids.keys()];
  }

  release(instanceId: string): void {
    const uid = this.uids.get(instanceId);
    if (uid === undefined) return;
    this.uids.delete(instanceId);
    this.taken.delete(uid);
    this.save();
  }

  /** Write-to-temp, fsync, rename: a crash leaves the old mapping or the new one, never half of one. */
  private save(): void {
    mkdirSync(dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify({ range: this.range, uids: Object.fromEntries(this.uids) }));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
    const dir = openSync(dirname(this.file), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  }
}
