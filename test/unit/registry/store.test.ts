import { describe, expect, it } from 'vitest';
import { LocalRegistry } from '../../../registry/embedded.js';
import { Mirror } from '../../../registry/mirror.js';
import { Store } from '../../../registry/store.js';
import { waitFor } from '../../helpers/tmp.js';

describe('store history and compaction', () => {
  it('a watch from a compacted revision reports compaction, and a mirror recovers by re-listing', async () => {
    const store = new Store(null, { historySize: 4 });
    const registry = new LocalRegistry(store);
    const first = await registry.put('c/a', '1');
    const mirror = await new Mirror(registry, 'c/', (raw) => raw).start();
    for (let i = 0; i < 10; i++) await registry.put(`c/k${i}`, String(i));
    let compactedAt = 0;
    registry.watch('c/', () => {}, { fromRevision: first, onCompacted: (rev) => (compactedAt = rev) });
    await waitFor(() => compactedAt > 0, { what: 'compaction notice' });
    expect(compactedAt).toBe(store.revision);
    // The live mirror saw every event as it happened.
    await waitFor(() => mirror.size === 11, { what: 'mirror to hold all keys' });
    mirror.close();
  });

  it('expires a lease only after its TTL without keep-alive', () => {
    let now = 0;
    const store = new Store(null, { now: () => now });
    const lease = store.grantLease(1_000);
    store.txn({ compare: [], success: [{ type: 'put', key: 'n/1', value: 'x', lease: lease.id }] });
    now = 900;
    store.expireLeases();
    expect(store.get('n/1')).toBeDefined();
    expect(store.keepAlive(lease.id)).toBe(true);
    now = 1_800;
    store.expireLeases();
    expect(store.get('n/1')).toBeDefined();
    now = 2_000;
    store.expireLeases();
    expect(store.get('n/1')).toBeUndefined();
    expect(store.keepAlive(lease.id)).toBe(false);
  });
});
