/**
 * A driver whose replicas are reached through the node's counting relay (meter.ts): what this node served is
 * what it can sign for, whichever driver ran the replica.
 */
import type { Driver } from '../drivers/driver.js';
import type { UsageMeter } from './meter.js';

export function metered(driver: Driver, meter: UsageMeter): Driver {
  return {
    name: driver.name,
    start: async (launch) => meter.wrap(launch, await driver.start(launch)),
    destroy: (instanceId) => driver.destroy(instanceId),
    close: async () => driver.close?.(),
  };
}
