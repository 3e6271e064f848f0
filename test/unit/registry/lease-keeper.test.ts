import { describe, expect, it } from 'vitest';
import { HeldLeases, KeptLease } from '../../../registry/lease-keeper.js';
import { waitFor } from '../../helpers/tmp.js';

describe('held leases', () => {
  it('drop leases that were revoked or lost, and keep the live ones', async () => {
    let alive = true;
    const transport = { keepAlive: async () => alive, revoke: async () => {} };
    const held = new HeldLeases();
    const revoked = held.add(new KeptLease('a', 300, transport));
    const lost = held.add(new KeptLease('b', 300, { ...transport, keepAlive: async () => false }));
    const live = held.add(new KeptLease('c', 300, { ...transport, keepAlive: async () => alive }));
    expect(held.size).toBe(3);
    await revoked.revoke();
    expect(held.size).toBe(2);
    await waitFor(() => held.size === 1, { timeoutMs: 2_000, what: 'the lost lease to drop out' });
    held.stopAll();
    alive = false;
    expect([lost, live].length).toBe(2);
  });
});
