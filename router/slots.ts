/**
 * Which quorum member runs which replica slot of an instance. Each slot ranks the members by a hash of
 * (instance, slot, member) — rendezvous hashing — and takes its best-ranked member among those holding the
 * fewest of the earlier slots (so replicas spread evenly: at most ceil(replicas / members) each). A member
 * leaving therefore moves mostly its own slots: the others keep their first choice. Every node computes the
 * same answer.
 *
 * Decision — a slot's member depends only on the slots before it, never on how many there are: the
 * autoscaler changes the count all the time, and with a cap of ceil(replicas / members) every change across
 * a multiple of the member count moved slots between members (each move a new replica started beside the
 * old one for the make-before-break grace). Now scaling up only adds slots and scaling down only removes
 * the last ones.
 */
import { hash53 } from './hash.js';

export function assignSlots(instanceId: string, members: readonly string[], replicas: number): Array<{ slot: number; nodeId: string }> {
  if (members.length === 0 || replicas <= 0) return [];
  const load = new Map<string, number>();
  const out: Array<{ slot: number; nodeId: string }> = [];
  for (let slot = 0; slot < replicas; slot++) {
    let fewest = Number.POSITIVE_INFINITY;
    for (const m of members) fewest = Math.min(fewest, load.get(m) ?? 0);
    let best: string | undefined;
    let bestScore = -1;
    for (const m of members) {
      if ((load.get(m) ?? 0) > fewest) continue;
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
