/**
 * Which quorum member runs which replica slot of an instance. Members are ranked by a hash of
 * (instance, member) so that different instances start their slots on different members, and slot s goes
 * to the member of rank s mod m: replicas spread evenly, and every node computes the same assignment.
 */
import { hash53 } from './hash.js';

export function assignSlots(instanceId: string, members: readonly string[], replicas: number): Array<{ slot: number; nodeId: string }> {
  if (members.length === 0 || replicas <= 0) return [];
  const ranked = [...members].sort((a, b) => hash53(`${instanceId}\0${a}`) - hash53(`${instanceId}\0${b}`) || (a < b ? -1 : 1));
  const out: Array<{ slot: number; nodeId: string }> = [];
  for (let slot = 0; slot < replicas; slot++) out.push({ slot, nodeId: ranked[slot % ranked.length] as string });
  return out;
}
