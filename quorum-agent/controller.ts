/**
 * The quorum-formation controller. Exactly one agent runs it at a time: leadership is a key created under
 * the leader's lease, so it vanishes when the leader dies. Every write the leader makes is a transaction
 * guarded by "the leader key still holds my id", so a deposed leader can never overwrite its successor.
 */
import type { Logger } from 'pino';
import { keys, PREFIX } from '../protocol/keys.js';
import { createIfAbsent, type Op, type Registry, type Watch } from '../protocol/registry.js';
import { parseRecord, quorumRecord } from '../protocol/schemas.js';
import type { QuorumRecord } from '../protocol/types.js';
import type { ClusterView } from '../registry/cluster-view.js';
import { formQuorums } from '../router/quorums.js';
import { SerialPass } from './serial-pass.js';

const ROLE = 'controller';

export class Controller {
  private leading = false;
  private readonly passes: SerialPass;
  private readonly leaderKey = keys.leader(ROLE);
  private watch: Watch | null = null;

  constructor(
    private readonly registry: Registry,
    private readonly view: ClusterView,
    private readonly nodeId: string,
    private readonly leaseId: () => string,
    private readonly log: Logger,
  ) {
    this.passes = new SerialPass(
      () => this.pass(),
      (err) => this.log.warn({ err }, 'controller pass failed'),
    );
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.watch = this.registry.watch(PREFIX.leaders, () => this.kick());
    this.view.onChange(() => this.kick());
    this.kick();
  }

  /** Runs one pass now, or once more after the pass in progress. */
  kick(): void {
    this.passes.request();
  }

  private async pass(): Promise<void> {
    const current = await this.registry.get(this.leaderKey);
    if (!current) {
      this.leading = await createIfAbsent(this.registry, this.leaderKey, this.nodeId, this.leaseId());
      if (this.leading) this.log.info('elected quorum controller');
    } else {
      this.leading = current.value === this.nodeId;
    }
    if (this.leading) await this.formQuorums();
  }

  private async formQuorums(): Promise<void> {
    const nodes = [...this.view.nodes.values()];
    if (nodes.length === 0) return;
    // Read quorums from the registry, not the view: the view may not show this leader's last write yet,
    // and a stale "previous" would found new quorums instead of refilling the existing ones.
    const { items } = await this.registry.list(PREFIX.quorums);
    const previous = items.map((kv) => parseRecord(quorumRecord, kv.value)).filter((q): q is QuorumRecord => q !== undefined);
    const previousById = new Map(previous.map((q) => [q.id, q]));
    const quorumSize = this.view.network().quorumSize;
    const next: QuorumRecord[] = formQuorums(
      nodes.map((n) => ({ id: n.id, capacity: n.capacity, region: n.region })),
      previous,
      quorumSize,
    ).map((q) => ({ ...q, capacity: q.members.reduce((sum, m) => sum + (this.view.node(m)?.capacity ?? 0), 0) }));

    const ops: Op[] = [];
    const nextIds = new Set(next.map((q) => q.id));
    for (const q of previous) if (!nextIds.has(q.id)) ops.push({ type: 'delete', key: keys.quorum(q.id) });
    for (const q of next) {
      const before = previousById.get(q.id);
      if (JSON.stringify(before) !== JSON.stringify(q)) ops.push({ type: 'put', key: keys.quorum(q.id), value: JSON.stringify(q) });
    }
    if (ops.length === 0) return;
    const res = await this.registry.txn({ compare: [{ key: this.leaderKey, target: 'value', equals: this.nodeId }], success: ops });
    if (!res.succeeded) {
      this.leading = false;
      return;
    }
    this.log.info({ quorums: next.map((q) => `${q.id}:${q.members.join(',')}`) }, 'quorums updated');
  }

  stop(): void {
    this.passes.stop();
    this.watch?.close();
  }
}
