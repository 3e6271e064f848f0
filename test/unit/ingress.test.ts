/**
 * The node ingress and the gateway's dialer, over real TLS sockets: only gateway keys get in, the node
 * is pinned by its key, a named replica becomes a raw pipe, a missing one is a retryable refusal.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IngressDialer } from '../../gateway/ingress-dialer.js';
import { identityCert } from '../../protocol/identity-cert.js';
import { generateKeyPair } from '../../protocol/signing.js';
import { NodeIngress } from '../../quorum-agent/ingress.js';
import { tempDir } from '../helpers/tmp.js';

describe('node ingress', () => {
  const dir = tempDir('allegra-ingress-');
  const nodeKey = generateKeyPair();
  const gatewayKey = generateKeyPair();
  const strangerKey = generateKeyPair();
  let replica: Server;
  let ingress: NodeIngress;
  let port = 0;
  const socket = join(dir.path, 'replica.sock');

  beforeAll(async () => {
    replica = createServer((req, res) => res.end(`replica saw ${req.method} ${req.url}`));
    replica.listen(socket);
    await once(replica, 'listening');
    ingress = new NodeIngress({
      host: '127.0.0.1',
      port: 0,
      cert: await identityCert(nodeKey, 'n-test'),
      isGateway: (key) => key === gatewayKey.publicKeyHex,
      replicaEndpoint: (id, slot) => (id === 'i-app' && slot === 0 ? `unix:${socket}` : undefined),
      log: pino({ level: 'silent' }),
    });
    port = await ingress.start();
  });

  afterAll(async () => {
    await ingress?.stop();
    replica?.closeAllConnections();
    replica?.close();
    dir.cleanup();
  });

  const dialer = async (key = gatewayKey, pinned = nodeKey.publicKeyHex) =>
    new IngressDialer(await identityCert(key, 'gw'), () => ({ ingress: `127.0.0.1:${port}`, publicKey: pinned }));

  const httpOver = (s: NodeJS.ReadWriteStream) =>
    new Promise<string>((resolve) => {
      let text = '';
      s.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.includes('replica saw')) resolve(text);
      });
      s.write('GET /hello HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n');
    });

  it('pipes a gateway to the replica it names', async () => {
    const s = await (await dialer()).replica('n-test', 'i-app', 0);
    expect(await httpOver(s)).toMatch(/replica saw GET \/hello/);
    s.destroy();
  });

  it('answers pings on one connection', async () => {
    const d = await dialer();
    const first = await d.ping('n-test');
    const second = await d.ping('n-test', first.socket);
    expect(second.socket).toBe(first.socket);
    expect(second.ms).toBeLessThan(1_000);
    first.socket.destroy();
  });

  it('refuses a replica it does not run as a connection failure, before any request byte', async () => {
    await expect((await dialer()).replica('n-test', 'i-other', 3)).rejects.toMatchObject({
      code: 'ECONNREFUSED',
      message: expect.stringMatching(/no replica i-other\.3/),
    });
  });

  it('lets no one but gateways in, and gateways trust only the registered node key', async () => {
    await expect((await dialer(strangerKey)).replica('n-test', 'i-app', 0)).rejects.toMatchObject({
      message: expect.stringMatching(/not a gateway|closed/),
    });
    await expect((await dialer(gatewayKey, generateKeyPair().publicKeyHex)).replica('n-test', 'i-app', 0)).rejects.toMatchObject({
      message: expect.stringMatching(/another key/),
    });
  });
});
