/**
 * "Same instance → same quorum on every node": independent views of one registry, as held by different
 * agents and gateways, must compute identical placements, and keep agreeing as quorums change.
 */
import { describe, expect, it } from 'vitest';
import { keys } from '../../../protocol/keys.js';
import { newInstanceSpec } from '../../../protocol/types.js';
import { ClusterView } from '../../../registry/cluster-view.js';
import { EmbeddedHost } from '../../../registry/embedded.js';
import { EmbeddedClient } from '../../../registry/embedded-client.js';
import { tempDir, waitFor } from '../../helpers/tmp.js';

const spec = (i: number) =>
  newInstanceSpec({ id: `i-${i.toString(16).padStart(12, '0')}`, name: `app-${i}`, owner: 'a'.repeat(64), cmd: 'node server.js' }, 0);

describe('cluster view placement', () => {
  it('independent views of one registry place every instance on the same quorum', async () => {
    const dir = tempDir();
    const host = await EmbeddedHost.start(dir.path);
    const clients = [
      new EmbeddedClient(host.socketPath, host.credential('admin')),
      new EmbeddedClient(host.socketPath, host.credential('admin')),
    ];
    try {
      for (let q = 0; q < 7; q++)
        await host.put(keys.quorum(`q-${q}`), JSON.stringify({ id: `q-${q}`, members: [`n-${q}a`, `n-${q}b`, `n-${q}c`], capacity: 48 }));
      for (let i = 0; i < 300; i++) await host.put(keys.instance(`app-${i}`), JSON.stringify(spec(i)));
      const views = await Promise.all([host, ...clients].map((r) => new ClusterView(r).start()));
      const placements = () => views.map((v) => [...Array(300).keys()].map((i) => v.quorumOf(spec(i).id)?.id));
      const [a, b, c] = placements();
      expect(a!.every((q) => q !== undefined)).toBe(true);
      expect(b).toEqual(a);
      expect(c).toEqual(a);
      // Every quorum gets a share: placement actually spreads.
      expect(new Set(a).size).toBe(7);

      // A quorum leaves: all views converge on the same new placement; bounded loads may shift a few
      // other instances, but most stay where they were.
      await host.delete(keys.quorum('q-3'));
      await waitFor(() => views.every((v) => v.quorums.size === 6), { what: 'views to see the quorum leave' });
      const [a2, b2, c2] = placements();
      expect(b2).toEqual(a2);
      expect(c2).toEqual(a2);
      expect(a2!.includes('q-3')).toBe(false);
      const stayers = [...Array(300).keys()].filter((i) => a![i] !== 'q-3');
      const kept = stayers.filter((i) => a2![i] === a![i]).length;
      expect(kept / stayers.length).toBeGreaterThan(0.9);
      for (const v of views) v.close();
    } finally {
      for (const c of clients) await c.close();
      await host.close();
      dir.cleanup();
    }
  });

  it('finds instances by id, following creates and deletes', async () => {
    const dir = tempDir();
    const host = await EmbeddedHost.start(dir.path);
    try {
      await host.put(keys.instance('app-1'), JSON.stringify(spec(1)));
      const view = await new ClusterView(host).start();
      expect(view.instanceById(spec(1).id)?.name).toBe('app-1');
      expect(view.instanceById(spec(2).id)).toBeUndefined();
      await host.put(keys.instance('app-2'), JSON.stringify(spec(2)));
      await waitFor(() => view.instanceById(spec(2).id)?.name === 'app-2', { what: 'the new instance by id' });
      await host.delete(keys.instance('app-1'));
      await waitFor(() => view.instanceById(spec(1).id) === undefined, { what: 'the deleted instance gone by id' });
      view.close();
    } finally {
      await host.close();
      dir.cleanup();
    }
  });
});
