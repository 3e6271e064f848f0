/**
 * The state API (../shared/STATE-API.md) as an app sees it, on a real devnet: three sandboxed replicas on
 * three agents write and read one key-value state through ALLEGRA_STATE_URL, through the gateway. A write
 * acknowledged by one replica is read back by every replica; conditional writes let exactly one of several
 * racing writers win; list, watch, limits and errors behave as the contract says; every member's copy
 * matches the committed checksum, and a member whose copy diverges repairs it.
 */
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InstanceStatus } from '../../protocol/types.js';
import { cliJson, DEVNET_FREE_PORTS, type DevnetInfo, startDevnet, stopDevnet } from '../helpers/cli.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

const APP = fileURLToPath(new URL('../fixtures/state-app/', import.meta.url));

describe('state API', () => {
  const dir = tempDir('allegra-state-');
  const env = { ALLEGRA_HOME: `${dir.path}/home`, ALLEGRA_STATE_FAULTS: 'drop-every:7' };
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo;

  const call = async (method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}) => {
    const res = await request(`${info.http}/state/${path}`, {
      method: method as 'GET',
      headers: { host: 'kv.localhost', ...headers },
      body,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    const buf = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, headers: res.headers, text: buf.toString(), buf, replica: String(res.headers['x-replica']) };
  };

  beforeAll(async () => {
    // Every agent of this devnet drops one state event in seven: their copies diverge and must repair.
    devnet = await startDevnet([...DEVNET_FREE_PORTS, '--no-demo', '--data', `${dir.path}/devnet`], env);
    info = devnet.info;
    await cliJson(['keys', 'init'], env);
    await cliJson(['create', 'kv', '--from', APP, '--cmd', 'node server.mjs'], env);
    await waitFor(async () => (await call('GET', 'status')).status === 200, { timeoutMs: 30_000, what: 'state API through the app' });
    // All three replicas in rotation before the tests start.
    const seen = new Set<string>();
    await waitFor(
      async () => {
        seen.add((await call('GET', 'status')).replica.split('/')[1] as string);
        return seen.size === 3;
      },
      { timeoutMs: 30_000, intervalMs: 20, what: 'three replicas answering' },
    );
  }, 120_000);

  afterAll(async () => {
    await stopDevnet(devnet);
    if (!process.env.KEEP_DEVNET) dir.cleanup();
  });

  it('reads a write from every replica, with revisions that only grow', async () => {
    const put = await call('PUT', 'kv/greeting', 'hello');
    expect(put.status, put.text).toBe(200);
    const { revision } = JSON.parse(put.text) as { revision: number };
    // Ask each replica itself (its relay socket on its agent's machine), not whichever the gateway picks.
    const { replicas } = await cliJson<InstanceStatus>(['status', 'kv'], env);
    expect(replicas).toHaveLength(3);
    const answers = await Promise.all(
      replicas.map(async (r) => {
        const res = await request('http://replica/state/kv/greeting', {
          dispatcher: new Agent({ connect: { socketPath: r.endpoint.slice(5) } }),
        });
        return { status: res.statusCode, etag: res.headers.etag, text: await res.body.text(), node: r.nodeId };
      }),
    );
    expect(new Set(answers.map((a) => a.node)).size).toBe(3);
    for (const a of answers) expect(a).toMatchObject({ status: 200, etag: `"${revision}"`, text: 'hello' });
    const again = JSON.parse((await call('PUT', 'kv/greeting', 'hello again')).text) as { revision: number };
    expect(again.revision).toBeGreaterThan(revision);
    // Binary values round-trip byte for byte.
    const bytes = Buffer.from([0, 255, 10, 13, 128, 1]);
    expect((await call('PUT', 'kv/bin', bytes)).status).toBe(200);
    expect((await call('GET', 'kv/bin')).buf.equals(bytes)).toBe(true);
  });

  it('lets exactly one of many racing conditional writers win', async () => {
    const created = JSON.parse((await call('PUT', 'kv/counter', '0')).text) as { revision: number };
    const racers = await Promise.all(
      Array.from({ length: 12 }, (_, i) => call('PUT', 'kv/counter', `winner-${i}`, { 'if-match': `"${created.revision}"` })),
    );
    expect(racers.filter((r) => r.status === 200)).toHaveLength(1);
    expect(racers.filter((r) => r.status === 412)).toHaveLength(11);
    const winner = racers.find((r) => r.status === 200);
    expect((await call('GET', 'kv/counter')).text).toBe(`winner-${racers.indexOf(winner as (typeof racers)[0])}`);
    const once = await Promise.all([1, 2, 3].map(() => call('PUT', 'kv/lock', 'mine', { 'if-none-match': '*' })));
    expect(once.map((r) => r.status).sort()).toEqual([200, 412, 412]);
  });

  it('lists by prefix in key order, deletes, and streams changes to watchers', async () => {
    for (const k of ['b', 'a', 'c']) expect((await call('PUT', `kv/list/${k}`, k.repeat(3))).status).toBe(200);
    const listed = JSON.parse((await call('GET', 'kv?prefix=list/')).text) as {
      items: Array<{ key: string; size: number }>;
      revision: number;
    };
    expect(listed.items.map((i) => i.key)).toEqual(['list/a', 'list/b', 'list/c']);
    expect(listed.items[0]?.size).toBe(3);
    expect(JSON.parse((await call('GET', 'kv?prefix=list/&limit=2')).text).items).toHaveLength(2);

    const watch = await request(`${info.http}/state/watch?prefix=list/&from=${listed.revision}`, { headers: { host: 'kv.localhost' } });
    expect(watch.headers['content-type']).toMatch(/text\/event-stream/);
    const events: Array<{ key: string; deleted: boolean; revision: number }> = [];
    const reading = (async () => {
      let buf = '';
      for await (const chunk of watch.body) {
        buf += chunk.toString();
        for (const m of buf.matchAll(/^data: (.+)$/gm)) events.push(JSON.parse(m[1] as string));
        buf = buf.slice(buf.lastIndexOf('\n') + 1);
        if (events.length >= 2) break;
      }
    })();
    expect((await call('DELETE', 'kv/list/a')).status).toBe(200);
    expect((await call('PUT', 'kv/list/d', 'dddd')).status).toBe(200);
    await reading;
    watch.body.destroy();
    expect(events.map((e) => [e.key, e.deleted])).toEqual([
      ['list/a', true],
      ['list/d', false],
    ]);
    expect((events[1] as { revision: number }).revision).toBeGreaterThan(listed.revision);
    expect((await call('GET', 'kv/list/a')).status).toBe(404);
  });

  it('answers bad requests clearly: 400, 404, 412, 413', async () => {
    expect((await call('GET', 'kv/nothing-here')).status).toBe(404);
    expect((await call('PUT', `kv/${'k'.repeat(513)}`, 'x')).status).toBe(400);
    expect((await call('PUT', 'kv/%00nul', 'x')).status).toBe(400);
    expect((await call('PUT', 'kv/big', Buffer.alloc(1024 * 1024 + 1))).status).toBe(413);
    expect((await call('PUT', 'kv/big', Buffer.alloc(1024 * 1024))).status).toBe(200);
    expect((await call('DELETE', 'kv/greeting', undefined, { 'if-match': '"1"' })).status).toBe(412);
    expect((await call('PUT', 'kv/x', 'y', { 'if-match': 'soon' })).status).toBe(400);
  });

  it('keeps a verified copy on every member, repairing copies that diverged', async () => {
    // Enough writes that every member dropped some events (drop-every:7) and had to repair.
    for (let i = 0; i < 30; i++) expect((await call('PUT', `kv/bulk/${i}`, `v${i}`)).status).toBe(200);
    const status = await waitFor(
      async () => {
        const s = await cliJson<InstanceStatus>(['status', 'kv'], env);
        const copies = s.members.map((m) => m.state);
        const revisions = new Set(copies.map((c) => c?.revision));
        return copies.length === 3 && copies.every((c) => c?.matches) && revisions.size === 1 ? s : undefined;
      },
      { timeoutMs: 15_000, what: 'every member at the same revision with a matching copy' },
    );
    const copies = status.members.map((m) => m.state as NonNullable<(typeof status.members)[0]['state']>);
    expect(new Set(copies.map((c) => c.checksum)).size).toBe(1);
    expect(copies.every((c) => c.repairs > 0)).toBe(true);
    // And the repaired copies serve the right values.
    for (let i = 0; i < 30; i += 7) expect((await call('GET', `kv/bulk/${i}`)).text).toBe(`v${i}`);
  });
});
