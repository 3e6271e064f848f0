/**
 * How many replicas an instance runs and where they may go, from registry state alone (pure): agents place
 * their slots with it and gateways use it to tell a sleeping instance (scaled to zero) from a broken one.
 */
import type { DriverName, InstanceSpec, NodeRecord, ScaleRecord } from '../protocol/types.js';

/** The autoscaler governs an instance whose replica bounds leave it room: replicas.max above replicas.min. */
export function autoscaled(spec: Pick<InstanceSpec, 'replicas'>): boolean {
  return spec.replicas.max > spec.replicas.min;
}

/** Replicas the instance should run now: the autoscaler's decision within the bounds, else the minimum. */
export function desiredReplicas(spec: Pick<InstanceSpec, 'id' | 'replicas'>, scale: ScaleRecord | undefined): number {
  const { min, max } = spec.replicas;
  if (!autoscaled(spec) || !scale || scale.instanceId !== spec.id) return min;
  return Math.min(max, Math.max(min, scale.desired));
}

/** Whether an instance may have no replica at all and wake on its next request. */
export function scalesToZero(spec: Pick<InstanceSpec, 'replicas' | 'state'>): boolean {
  return spec.state === 'running' && spec.replicas.min === 0;
}

/**
 * Nodes from before drivers were advertised run `process` only. A member whose record is briefly missing
 * (its lease is being renewed) keeps its `process` slots, as it always did, rather than moving them.
 */
export function offersDriver(node: Pick<NodeRecord, 'drivers'> | undefined, driver: DriverName): boolean {
  return (node?.drivers ?? ['process']).includes(driver);
}

/** The quorum members that can run an instance's driver, in quorum order (slot placement ranks these). */
export function eligibleMembers(
  members: readonly string[],
  driver: DriverName,
  nodeOf: (id: string) => Pick<NodeRecord, 'drivers'> | undefined,
): string[] {
  return members.filter((m) => offersDriver(nodeOf(m), driver));
}
