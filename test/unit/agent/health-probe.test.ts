/**
 * The replica health probe against real servers: HTTP/1, h2c-only (node:http2 and a grpc-js server, as a
 * gRPC app is), over TCP and a Unix socket; 5xx and nothing listening are unhealthy on either protocol.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createH2Server, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { probeHealth } from '../../../quorum-agent/drivers/health-probe.js';
import { freePort } from '../../../quorum-agent/ports.js';
import { tempDir } from '../../helpers/tmp.js';

const GRPC_SERVER = fileURLToPath(new URL('../../fixtures/grpc/server.mjs', import.meta.url));

describe('replica health probe', () => {
  const dir = tempDir('allegra-probe-');
  const servers: Array<Server | Http2Server> = [];
  const children: ChildProcess[] = [];

  const listen = async <S extends Server | Http2Server>(server: S, where: number | string): Promise<S> => {
    servers.push(server);
    await new Promise<void>((resolve) =>
      typeof where === 'number' ? server.listen(where, '127.0.0.1', resolve) : server.listen(where, resolve),
    );
    return server;
  };
  const port = (s: Server | Http2Server) => (s.address() as AddressInfo).port;

  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    dir.cleanup();
  });

  it('is healthy when an HTTP/1 server answers below 500, and not at 500 or when nothing listens', async () => {
    const ok = await listen(
      createHttpServer((_req, res) => res.writeHead(404).end()),
      0,
    );
    const failing = await listen(
      createHttpServer((_req, res) => res.writeHead(503).end()),
      0,
    );
    expect(await probeHealth({ url: `http://127.0.0.1:${port(ok)}` }, '/', 1_000)).toBe(true);
    expect(await probeHealth({ url: `http://127.0.0.1:${port(failing)}` }, '/', 1_000)).toBe(false);
    expect(await probeHealth({ url: `http://127.0.0.1:${await freePort()}` }, '/', 1_000)).toBe(false);
    expect(await probeHealth({ socketPath: join(dir.path, 'none.sock') }, '/', 1_000)).toBe(false);
  });

  it('asks an HTTP/2-only server again over h2c, on TCP and on a Unix socket', async () => {
    const h2 = await listen(
      createH2Server((_req, res) => res.writeHead(200).end()),
      0,
    );
    const sock = join(dir.path, 'h2.sock');
    await listen(
      createH2Server((_req, res) => res.writeHead(204).end()),
      sock,
    );
    const h2failing = await listen(
      createH2Server((_req, res) => res.writeHead(500).end()),
      0,
    );
    expect(await probeHealth({ url: `http://127.0.0.1:${port(h2)}` }, '/', 1_000)).toBe(true);
    expect(await probeHealth({ socketPath: sock }, '/', 1_000)).toBe(true);
    expect(await probeHealth({ url: `http://127.0.0.1:${port(h2failing)}` }, '/', 1_000)).toBe(false);
  });

  it('finds a grpc-js server healthy', async () => {
    const child = spawn(process.execPath, [GRPC_SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const line = await new Promise<string>((resolve) =>
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve),
    );
    const { port: grpcPort } = JSON.parse(line) as { port: number };
    expect(await probeHealth({ url: `http://127.0.0.1:${grpcPort}` }, '/', 1_000)).toBe(true);
  });
});
