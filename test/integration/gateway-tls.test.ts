/**
 * TLS as served by a gateway process, checked with openssl's own client: the full chain for local-CA
 * certificates, TLS 1.2 with AEAD suites only (no CBC), and a TLS 1.3-only option.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Cluster,
  type GatewayProcess,
  startCluster,
  startUpstream,
  stopUpstreams,
  type Upstream,
} from '../helpers/gateway-fixture.js';
import { waitFor } from '../helpers/tmp.js';

const run = promisify(execFile);

/** One handshake with `openssl s_client`; returns its output (handshake failures included). */
async function handshake(port: string, args: string[]): Promise<string> {
  const pending = run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'tls.test', ...args], { timeout: 10_000 });
  pending.child.stdin?.end(); // s_client quits at the end of its input
  const r = await pending.catch((err: { stdout?: string; stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr ?? '' }));
  return `${r.stdout}\n${r.stderr}`;
}
const negotiated = (out: string) => /Cipher is (\S+)/.exec(out)?.[1] ?? '(NONE)';

describe('gateway TLS', () => {
  let cluster: Cluster;
  let up: Upstream;
  let gw: GatewayProcess;
  let strict: GatewayProcess;
  let port: string;

  beforeAll(async () => {
    cluster = await startCluster();
    up = await startUpstream('t1');
    await cluster.addApp('tls', [up]);
    // Exposed by its owner: certificates are ordered only for routes whose owner-signed grants check out.
    await cluster.expose('tls', { redirectHttp: false });
    const ca = join(cluster.dir, 'ca');
    gw = await cluster.startGateway(['--local-ca', ca], { healthCheck: false });
    strict = await cluster.startGateway(['--local-ca', ca], { healthCheck: false, tls13Only: true });
    port = new URL(gw.https as string).port;
    await waitFor(async () => (await handshake(port, ['-showcerts'])).includes('CN = tls.test'), {
      timeoutMs: 15_000,
      what: 'certificate',
    });
  }, 60_000);

  afterAll(async () => {
    await cluster?.cleanup();
    stopUpstreams(up ? [up] : []);
  });

  it('sends the leaf and the CA that signed it', async () => {
    const out = await handshake(port, ['-showcerts']);
    expect(out.match(/-----BEGIN CERTIFICATE-----/g)?.length).toBe(2);
    expect(out).toMatch(/1 s:.*Allegra Local CA Root/);
  });

  it('offers TLS 1.2 with AEAD suites only, and nothing older', async () => {
    expect(negotiated(await handshake(port, ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256']))).toBe(
      'ECDHE-ECDSA-AES128-GCM-SHA256',
    );
    expect(negotiated(await handshake(port, ['-tls1_2', '-cipher', 'ECDHE-ECDSA-CHACHA20-POLY1305']))).toBe(
      'ECDHE-ECDSA-CHACHA20-POLY1305',
    );
    for (const cbc of ['ECDHE-ECDSA-AES128-SHA256', 'ECDHE-ECDSA-AES256-SHA384', 'ECDHE-ECDSA-AES128-SHA'])
      expect(negotiated(await handshake(port, ['-tls1_2', '-cipher', cbc])), cbc).toBe('(NONE)');
    expect(negotiated(await handshake(port, ['-tls1_1']))).toBe('(NONE)');
    expect(await handshake(port, ['-tls1_3'])).toMatch(/TLSv1\.3/);
  });

  it('with tls13Only, refuses TLS 1.2', async () => {
    const p = new URL(strict.https as string).port;
    await waitFor(async () => (await handshake(p, ['-tls1_3'])).includes('CN = tls.test'), { timeoutMs: 10_000, what: 'certificate' });
    expect(negotiated(await handshake(p, ['-tls1_2']))).toBe('(NONE)');
  });
});
