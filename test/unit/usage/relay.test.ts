import { createServer, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { CountingRelay } from '../../../quorum-agent/usage/relay.js';
import { tempDir, waitFor } from '../../helpers/tmp.js';

describe('the counting relay in front of a replica', () => {
  const dir = tempDir('allegra-relay-');
  const held: ServerResponse[] = [];
  // The "replica": holds every request until the test answers it.
  const upstream = createServer((req, res) => {
    req.resume();
    held.push(res);
  });
  const relay = new CountingRelay(join(dir.path, 'relay.sock'), `unix:${join(dir.path, 'app.sock')}`);
  const client = new Agent({ connect: { socketPath: join(dir.path, 'relay.sock') }, connections: 8 });

  afterAll(async () => {
    await client.close();
    await relay.close();
    upstream.closeAllConnections();
    await new Promise<void>((r) => upstream.close(() => r()));
    dir.cleanup();
  });

  it('counts requests, and those waiting for the replica until its first byte', async () => {
    await new Promise<void>((r) => upstream.listen(join(dir.path, 'app.sock'), () => r()));
    await relay.start();
    const send = (path: string) => request(`http://replica${path}`, { dispatcher: client }).then((res) => res.body.text());
    const answers = [send('/a'), send('/b'), send('/c')];
    await waitFor(() => held.length === 3, { what: 'three requests at the replica' });
    expect(relay.awaiting).toBe(3);
    expect(relay.traffic.requests).toBe(3);
    (held.shift() as ServerResponse).end('one');
    await answers[0];
    await waitFor(() => relay.awaiting === 2, { what: 'one answered' });
    for (const res of held.splice(0)) res.end('rest');
    await Promise.all(answers);
    await waitFor(() => relay.awaiting === 0, { what: 'all answered' });
    // A second round on the same kept-alive connections counts again and settles again.
    const again = [send('/d'), send('/e')];
    await waitFor(() => held.length === 2, { what: 'two more at the replica' });
    expect(relay.awaiting).toBe(2);
    expect(relay.traffic.requests).toBe(5);
    for (const res of held.splice(0)) res.end('ok');
    await Promise.all(again);
    await waitFor(() => relay.awaiting === 0, { what: 'settled' });
  });

  it('forgets what a closed connection was waiting for', async () => {
    const controller = new AbortController();
    const pending = request('http://replica/hang', { dispatcher: client, signal: controller.signal }).catch(() => undefined);
    await waitFor(() => held.length === 1, { what: 'the request at the replica' });
    expect(relay.awaiting).toBe(1);
    controller.abort();
    await pending;
    await waitFor(() => relay.awaiting === 0, { what: 'the aborted request forgotten' });
    for (const res of held.splice(0)) res.destroy();
  });
});
