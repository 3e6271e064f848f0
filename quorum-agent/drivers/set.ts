/**
 * The drivers a node offers, by name. The agent builds it at start (the operator may leave some out with
 * `--drivers`); node records advertise its names and slot placement sends an instance's replicas only to
 * quorum members that offer its driver.
 */
import type { DriverName } from '../../protocol/types.js';
import type { Driver } from './driver.js';

export class DriverSet {
  private readonly drivers = new Map<DriverName, Driver>();

  static of(...drivers: Driver[]): DriverSet {
    const set = new DriverSet();
    for (const d of drivers) set.add(d);
    return set;
  }

  add(driver: Driver): void {
    if (this.drivers.has(driver.name)) throw new Error(`driver ${driver.name} is already registered`);
    this.drivers.set(driver.name, driver);
  }

  get(name: DriverName): Driver | undefined {
    return this.drivers.get(name);
  }

  /** What the node record advertises, in a stable order. */
  names(): DriverName[] {
    return [...this.drivers.keys()].sort();
  }

  /** An instance left this node: every driver releases what it kept for it. */
  async destroy(instanceId: string): Promise<void> {
    for (const d of this.drivers.values()) await d.destroy(instanceId);
  }

  /** After every replica stopped: each driver releases what it holds for the node (cgroup scope, wasm host). */
  async close(): Promise<void> {
    const results = await Promise.allSettled([...this.drivers.values()].map((d) => d.close?.()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
