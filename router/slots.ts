/**
 * Which quorum member runs which replica slot of an instance. Each slot ranks the members by a hash of
 * (instance, slot, member) — rendezvous hashing — and takes its best-ranked member that still has room
 * (at most ceil(replicas / members) slots each, so replicas spread evenly). A member leaving therefore
 * moves mostly its own slots: the others keep their first choice. Every node computes the same answer.
 */
import { hash53 } from './hash.js';

export function assignSlots(instanceId: string, members: readonly string[], replicas: number): Array<{ slot: number; nodeId: string }> {
  if (members.length === 0 || replicas <= 0) return [];
  const cap = Math.ceil(replicas / members.length);
  const load = new Map<string, number>();
  const out: Array<{ slot: number; nodeId: string }> = [];
  for (let slot = 0; slot < replicas; slot++) {
    let best: string | undefined;
    let bestScore = -1;
    for (const m of members) {
      if ((load.get(m) ?? 0) >= cap) continue;
      const score = hash53(`${instanceId}\0${slot}\0${m}`);
      if (score > bestScore || (score === bestScore && best !== undefined && m < best)) {
        bestScore = score;
        best = m;
      }
    }
    const nodeId = best as string;
    load.set(nodeId, (load.get(nodeId) ?? 0) + 1);
    out.push({ slot, nodeId });
  }
  return out;
}
