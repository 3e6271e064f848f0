/**
 * Which machine this is, so a gateway can tell replicas it can reach through their local sockets from
 * replicas on other machines (reached through their node's ingress). `ALLEGRA_MACHINE_ID` overrides it —
 * tests that simulate several machines on one host set it per simulated machine.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

export function machineId(): string {
  const set = process.env.ALLEGRA_MACHINE_ID;
  if (set) return set;
  let raw = '';
  for (const file of ['/etc/machine-id', '/var/lib/dbus/machine-id']) {
    try {
      raw = readFileSync(file, 'utf8').trim();
      if (raw) break;
    } catch {
      /* try the next */
    }
  }
  return createHash('sha256')
    .update(raw || hostname())
    .digest('hex')
    .slice(0, 16);
}
