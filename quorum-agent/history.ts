/**
 * Appends to instances' histories (protocol/history.ts). A record goes in the same registry transaction as
 * the change it describes, guarded by the history head's revision: two agents appending at once cannot both
 * win, and no change is committed without its record (nor a record without its change).
 */
import {
  genesisHash,
  type HistoryEntry,
  type HistoryHead,
  type HistoryRecord,
  historyHeadSchema,
  historyRecordSchema,
  recordHash,
} from '../protocol/history.js';
import { keys } from '../protocol/keys.js';
import { signRecord } from '../protocol/records.js';
import type { Compare, Op, Registry } from '../protocol/registry.js';
import { parseRecord } from '../protocol/schemas.js';
import type { KeyPair } from '../protocol/signing.js';

/** Where an instance's chain ends, and the head key's revision to guard an append with. */
export interface HistoryTip {
  head: HistoryHead | null;
  modRevision: number;
}

export class HistoryWriter {
  constructor(
    private readonly registry: Registry,
    private readonly keyPair: KeyPair,
    private readonly nodeId: string,
  ) {}

  async tip(instanceId: string): Promise<HistoryTip> {
    const kv = await this.registry.get(keys.historyHead(instanceId));
    return { head: parseRecord(historyHeadSchema, kv?.value) ?? null, modRevision: kv?.modRevision ?? 0 };
  }

  /** The compare and operations that append `entry` after `tip`: add them to the change's transaction. */
  append(
    instanceId: string,
    tip: HistoryTip,
    entry: HistoryEntry,
    at = Date.now(),
  ): { compare: Compare; ops: Op[]; record: HistoryRecord } {
    const seq = tip.head ? tip.head.seq + 1 : 0;
    const unsigned = {
      instanceId,
      seq,
      prev: tip.head ? tip.head.hash : genesisHash(instanceId),
      at,
      node: this.nodeId,
      ...entry,
    };
    const record = signRecord(this.keyPair, unsigned) as HistoryRecord;
    const head: HistoryHead = { seq, hash: recordHash(record) };
    const key = keys.historyHead(instanceId);
    return {
      compare: tip.modRevision === 0 ? { key, target: 'version', equals: 0 } : { key, target: 'modRevision', equals: tip.modRevision },
      ops: [
        { type: 'put', key: keys.historyRecord(instanceId, seq), value: JSON.stringify(record) },
        { type: 'put', key, value: JSON.stringify(head) },
      ],
      record,
    };
  }

  /**
   * Appends a record on its own (what the node did itself: SSH sessions) while every `guard` holds;
   * retries when another append won the head. Null when it could not get through.
   */
  async appendAlone(instanceId: string, entry: HistoryEntry, guard: Compare[] = []): Promise<HistoryRecord | null> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const tip = await this.tip(instanceId);
      const { compare, ops, record } = this.append(instanceId, tip, entry);
      const res = await this.registry.txn({ compare: [compare, ...guard], success: ops });
      if (res.succeeded) return record;
    }
    return null;
  }

  /** The whole chain as stored, in order, and the head the registry names. Unparseable records are kept out. */
  async read(instanceId: string): Promise<{ records: HistoryRecord[]; head: HistoryHead | null; malformed: string[] }> {
    const [{ items }, tip] = await Promise.all([this.registry.list(keys.historyRecords(instanceId)), this.tip(instanceId)]);
    const records: HistoryRecord[] = [];
    const malformed: string[] = [];
    for (const kv of items) {
      const r = parseRecord(historyRecordSchema, kv.value);
      if (r) records.push(r as HistoryRecord);
      else malformed.push(kv.key);
    }
    return { records, head: tip.head, malformed };
  }
}
