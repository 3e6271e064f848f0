/**
 * socket.io on three replicas through the gateway (issue 13): the example app (examples/socketio-chat) with
 * `--sticky cookie`, reached by socket.io's own client with its default transports (long-polling first, then
 * the WebSocket upgrade). Every client connects — polling works only if each session's requests stay on one
 * replica — and a message broadcast by one client reaches clients held by every replica, through the
 * state-API adapter.
 */
import { mkdirSync } from 'node:fs';
import { type AgentOptions, Agent as HttpAgent } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rolldown } from 'rolldown';
import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliJson, DEVNET_FREE_PORTS, type DevnetInfo, startDevnet, stopDevnet } from '../helpers/cli.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

const EXAMPLE = fileURLToPath(new URL('../../examples/socketio-chat/', import.meta.url));

describe('socket.io on three replicas with the state-API adapter', () => {
  const dir = tempDir('allegra-sio-');
  const env = { ALLEGRA_HOME: `${dir.path}/home` };
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    // The example and socket.io, bundled into one file the way a developer would ship it.
    const app = join(dir.path, 'app');
    mkdirSync(app);
    const bundle = await rolldown({
      input: join(EXAMPLE, 'server.mjs'),
      platform: 'node',
      external: ['bufferutil', 'utf-8-validate'],
      logLevel: 'silent',
    });
    await bundle.write({ file: join(app, 'server.cjs'), format: 'cjs' });
    devnet = await startDevnet([...DEVNET_FREE_PORTS, '--no-demo', '--data', `${dir.path}/devnet`], env);
    info = devnet.info;
    await cliJson(['keys', 'init'], env);
    await cliJson(['create', 'chat', '--sticky', 'cookie', '--from', app, '--cmd', 'node server.cjs'], env);
    await waitFor(
      async () => {
        const s = await cliJson<{ replicas: Array<{ healthy: boolean }> }>(['status', 'chat'], env);
        return s.replicas.filter((r) => r.healthy).length === 3;
      },
      { timeoutMs: 40_000, what: 'three healthy replicas' },
    );
  }, 120_000);

  afterAll(async () => {
    for (const s of sockets) s.disconnect();
    loopback.destroy();
    await stopDevnet(devnet);
    dir.cleanup();
  });

  const loopback = new HttpAgent({
    keepAlive: true,
    lookup: (_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) =>
      opts.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4),
  } as AgentOptions);

  const connect = () =>
    new Promise<{ socket: Socket; replica: string; transport: string }>((resolve, reject) => {
      // The app's name in the URL, as a user would type it; the agent connects to the gateway on loopback
      // (names under .localhost do not resolve here). Cookies are kept, as a browser keeps them.
      const socket = io(`http://chat.localhost:${new URL(info.http).port}`, {
        // engine.io-client types `agent` as string | boolean; in Node it takes an http.Agent (passed to http.request).
        agent: loopback as unknown as string,
        withCredentials: true,
        reconnection: false,
        timeout: 10_000,
      });
      sockets.push(socket);
      socket.once('hello', (msg: { replica: string }) =>
        resolve({ socket, replica: msg.replica, transport: socket.io.engine.transport.name }),
      );
      socket.once('connect_error', (err) => reject(err));
    });

  it('connects every client with the default transports, on every replica', async () => {
    const clients: Array<Awaited<ReturnType<typeof connect>>> = [];
    for (let i = 0; i < 12; i++) clients.push(await connect());
    const replicas = new Set(clients.map((c) => c.replica));
    expect(replicas.size).toBe(3);
    // Polling handed over to WebSocket on the same replica (the upgrade is routed by the same cookie).
    await waitFor(() => clients.every((c) => c.socket.io.engine.transport.name === 'websocket'), {
      timeoutMs: 10_000,
      what: 'every client upgraded to WebSocket',
    });
  });

  it('delivers a broadcast to clients held by every replica', async () => {
    const clients = await Promise.all(Array.from({ length: 9 }, () => connect()));
    expect(new Set(clients.map((c) => c.replica)).size).toBeGreaterThanOrEqual(2);
    const received = clients.map(
      (c) =>
        new Promise<{ text: string; from: string }>((resolve) => c.socket.once('said', (m: { text: string; from: string }) => resolve(m))),
    );
    (clients[0] as { socket: Socket }).socket.emit('say', 'hello everyone');
    const got = await Promise.race([
      Promise.all(received),
      new Promise<never>((_, r) => setTimeout(() => r(new Error('broadcast not received by all')), 10_000)),
    ]);
    for (const m of got) expect(m.text).toBe('hello everyone');
  });
});
