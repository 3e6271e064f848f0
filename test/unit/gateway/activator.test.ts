/**
 * The activator on real node:http sockets: requests for a sleeping instance wait, within their bounds
 * (queue per instance, deadline), and are released oldest first with x-allegra-cold-start once the
 * instance has room; a request that finds no room yet stays held; a client that leaves is forgotten.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { Registry } from 'prom-client';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { Activator, type Resumed } from '../../../gateway/activator.js';
import type { InstanceSpec, RouteRecord } from '../../../protocol/types.js';
import { newInstanceSpec } from '../../../protocol/types.js';
import { sleep, waitFor } from '../../helpers/tmp.js';

const route: RouteRecord = { host: 'app.localhost', instanceId: 'i-1', instanceName: 'app', kind: 'network', createdAt: 0 };
const spec = (min: number): InstanceSpec => newInstanceSpec({ id: 'i-1', name: 'app', owner: 'o'.repeat(64), replicas: { min, max: 3 } });

describe('Activator', () => {
  let server: Server | undefined;
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((r) => (server ? server.close(r) : r(null)));
  });

  /** A server whose every request is held; `room` decides what resume() finds. */
  async function serve(opts: { maxPerInstance?: number; timeoutMs?: number }) {
    const changes: number[] = [];
    const metrics = new Registry();
    const activator = new Activator({ maxTotal: 100, ...opts }, metrics, pino({ level: 'silent' }), () =>
      changes.push(activator.heldCounts().get('i-1') ?? 0),
    );
    const state = { room: 0 as number, order: [] as string[] };
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      activator.hold(route, req, res, 60_000, 'rid', (): Resumed => {
        if (state.room <= 0) return 'full';
        state.room--;
        state.order.push(req.url ?? '');
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`served ${req.url}`);
        return 'forwarded';
      });
    });
    await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const get = async (path: string) => {
      const res = await request(`http://127.0.0.1:${port}${path}`);
      return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
    };
    return { activator, state, get, changes, metrics, port };
  }

  it('holds only for instances that scale to zero', () => {
    const a = new Activator({}, new Registry(), pino({ level: 'silent' }), () => {});
    expect(a.wouldHold(route, spec(0))).toBe(true);
    expect(a.wouldHold(route, spec(1))).toBe(false);
    expect(a.wouldHold(route, { ...spec(0), state: 'stopped' })).toBe(false);
    expect(a.wouldHold(route, { ...spec(0), id: 'i-other' })).toBe(false);
    expect(a.wouldHold(route, undefined)).toBe(false);
  });

  it('releases held requests oldest first, as room allows, with the time they waited', async () => {
    const { activator, state, get, changes, metrics } = await serve({});
    const replies = ['/1', '/2', '/3'].map((p) => get(p));
    await waitFor(() => activator.heldCounts().get('i-1') === 3, { what: 'three held' });
    expect(changes.at(-1)).toBe(3);
    await sleep(50);
    // Room for two: the third stays held and is offered again shortly.
    state.room = 2;
    activator.release('i-1');
    expect(state.order).toEqual(['/1', '/2']);
    expect(activator.heldCounts().get('i-1')).toBe(1);
    state.room = 1;
    const all = await Promise.all(replies);
    expect(state.order).toEqual(['/1', '/2', '/3']);
    for (const r of all) {
      expect(r.status).toBe(200);
      expect(Number(r.headers['x-allegra-cold-start'])).toBeGreaterThanOrEqual(40);
    }
    expect(activator.heldCounts().size).toBe(0);
    expect(changes.at(-1)).toBe(0);
    expect(await metrics.metrics()).toMatch(/allegra_gateway_cold_start_seconds_count\{route="app"\} 3/);
  });

  it('refuses past its queue with 503 and Retry-After, and past the deadline the same way', async () => {
    const { activator, get, metrics } = await serve({ maxPerInstance: 2, timeoutMs: 300 });
    const held = [get('/a'), get('/b')];
    await waitFor(() => activator.heldCounts().get('i-1') === 2, { what: 'two held' });
    const full = await get('/c');
    expect(full.status).toBe(503);
    expect(full.headers['retry-after']).toBe('1');
    expect(full.text).toMatch(/waking up and its queue is full/);
    const timedOut = await Promise.all(held);
    for (const r of timedOut) {
      expect(r.status).toBe(503);
      expect(r.headers['retry-after']).toBe('1');
      expect(r.text).toMatch(/did not wake within 300 ms/);
    }
    expect(activator.heldCounts().size).toBe(0);
    const text = await metrics.metrics();
    expect(text).toMatch(/allegra_gateway_activator_refused_total\{reason="queue-full"\} 1/);
    expect(text).toMatch(/allegra_gateway_activator_refused_total\{reason="timeout"\} 2/);
  });

  it('forgets a client that leaves while held', async () => {
    const { activator, port } = await serve({});
    const ac = new AbortController();
    const gone = request(`http://127.0.0.1:${port}/leaving`, { signal: ac.signal }).catch(() => null);
    await waitFor(() => activator.heldCounts().get('i-1') === 1, { what: 'held' });
    ac.abort();
    await gone;
    await waitFor(() => activator.heldCounts().size === 0, { what: 'forgotten' });
  });
});
