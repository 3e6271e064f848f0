/**
 * Certificate storage split: `certs/<host>` holds the public chain (agents may read it), `cert-keys/<host>` the
 * private key (gateways only), written in one transaction; a gateway pairs them by hash, and keys stored the
 * old way inside `certs/` are moved out when a gateway starts.
 */
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalCa } from '../../../cert/local-ca.js';
import { LocalCaIssuer } from '../../../cert/local-issuer.js';
import { CertManager } from '../../../cert/manager.js';
import { keys } from '../../../protocol/keys.js';
import type { WatchEvent } from '../../../protocol/registry.js';
import type { RouteRecord } from '../../../protocol/types.js';
import { EmbeddedHost } from '../../../registry/embedded.js';
import { tempDir, waitFor } from '../../helpers/tmp.js';

const log = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup() {
  const dir = tempDir('allegra-certkeys-');
  cleanups.push(dir.cleanup);
  const host = await EmbeddedHost.start(`${dir.path}/registry`);
  cleanups.push(() => host.close());
  const ca = await LocalCa.loadOrCreate(`${dir.path}/ca`);
  const route = (name: string): RouteRecord => ({
    host: name,
    instanceId: 'i-1',
    instanceName: 'app',
    kind: 'network',
    createdAt: Date.now(),
    tls: { redirectHttp: false },
  });
  const start = async () => {
    const manager = await new CertManager({
      registry: host.as('gateway'),
      issuer: new LocalCaIssuer(ca),
      holderId: 'gw-test',
      log,
      checkIntervalMs: 100,
      // This test is about key storage: it trusts its own route records as written.
      servedRoute: (r) => r,
    }).start();
    cleanups.push(() => manager.stop());
    return manager;
  };
  return { host, ca, route, start };
}

describe('certificate keys are stored apart from certificates', () => {
  it('issues into certs/ (public) and cert-keys/ (gateways) in one transaction; agents read only the certificate', async () => {
    const { host, route, start } = await setup();
    const events: WatchEvent[] = [];
    const w = host.watch('cert', (e) => events.push(...e));
    await host.put(keys.route('a.test'), JSON.stringify(route('a.test')));
    const manager = await start();
    await waitFor(() => manager.sniContext('a.test'), { what: 'a certificate for a.test' });
    w.close();
    const cert = JSON.parse((await host.get(keys.cert('a.test')))?.value ?? '{}') as Record<string, unknown>;
    const key = JSON.parse((await host.get(keys.certKey('a.test')))?.value ?? '{}') as Record<string, string>;
    expect(cert.keyPem).toBeUndefined();
    expect(cert.certPem).toContain('BEGIN CERTIFICATE');
    expect(key.keyPem).toContain('PRIVATE KEY');
    expect(key.certSha256).toBe(createHash('sha256').update(String(cert.certPem)).digest('hex'));
    expect(new X509Certificate(String(cert.certPem)).checkPrivateKey(createPrivateKey(key.keyPem))).toBe(true);
    // Both halves carry the same revision: one transaction.
    const certEvent = events.find((e) => e.key === keys.cert('a.test'));
    const keyEvent = events.find((e) => e.key === keys.certKey('a.test'));
    expect(certEvent?.modRevision).toBeDefined();
    expect(keyEvent?.modRevision).toBe(certEvent?.modRevision);

    const agent = host.as('agent');
    expect((await agent.get(keys.cert('a.test')))?.value).toContain('BEGIN CERTIFICATE');
    await expect(agent.get(keys.certKey('a.test'))).rejects.toThrow('role "agent" may not get "cert-keys/a.test"');
    await expect(agent.list('cert-keys/')).rejects.toThrow('may not list');
  });

  it('moves a key stored inside certs/ by an older version out to cert-keys/, and serves it', async () => {
    const { host, ca, route, start } = await setup();
    const issued = await ca.issue(['old.test']);
    const x509 = new X509Certificate(issued.certPem);
    const notBefore = Date.parse(x509.validFrom);
    const notAfter = Date.parse(x509.validTo);
    const legacy = {
      host: 'old.test',
      certPem: issued.certPem,
      keyPem: issued.keyPem,
      notBefore,
      notAfter,
      renewAfter: notAfter,
      issuer: 'local',
      issuedAt: Date.now(),
    };
    await host.put(keys.cert('old.test'), JSON.stringify(legacy));
    await host.put(keys.route('old.test'), JSON.stringify(route('old.test')));
    const manager = await start();
    await waitFor(() => manager.sniContext('old.test'), { what: 'the moved certificate to be served' });
    const cert = JSON.parse((await host.get(keys.cert('old.test')))?.value ?? '{}') as Record<string, unknown>;
    expect(cert.keyPem).toBeUndefined();
    expect(cert.certPem).toBe(issued.certPem);
    const key = JSON.parse((await host.get(keys.certKey('old.test')))?.value ?? '{}') as Record<string, string>;
    expect(key.keyPem).toBe(issued.keyPem);
  });

  it('never pairs a certificate with a key made for another one: the previous pair is served until both halves match', async () => {
    const { host, ca, route, start } = await setup();
    await host.put(keys.route('b.test'), JSON.stringify(route('b.test')));
    const manager = await start();
    const first = await waitFor(() => manager.sniContext('b.test'), { what: 'first certificate' });
    const next = await ca.issue(['b.test']);
    const old = JSON.parse((await host.get(keys.cert('b.test')))?.value ?? '{}') as Record<string, unknown>;
    // Only the certificate half of a new pair arrives: the old context stays.
    await host.put(keys.cert('b.test'), JSON.stringify({ ...old, certPem: next.certPem }));
    await new Promise((r) => setTimeout(r, 200));
    expect(manager.sniContext('b.test')).toBe(first);
    const certSha256 = createHash('sha256').update(next.certPem).digest('hex');
    await host.put(keys.certKey('b.test'), JSON.stringify({ host: 'b.test', keyPem: next.keyPem, certSha256 }));
    await waitFor(() => manager.sniContext('b.test') !== first, { what: 'the new pair' });
  });
});
