import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { existsSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { Agent, createServer as createHttpsServer, type Server as HttpsServer, request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import * as acme from 'acme-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePorts } from '../../../quorum-agent/ports.js';
import { type Pebble, startPebble } from '../../helpers/pebble.js';

const run = promisify(execFile);

let pebble: Pebble;
let challengeServer: HttpServer;
let httpPort: number;
/** token → key authorization, served at /.well-known/acme-challenge/<token> */
const challenges = new Map<string, string>();
/** Paths Pebble's validation authority asked for. */
const vaRequests: string[] = [];
const startMs: Record<string, number> = {};
let issued: { certPem: string; keyPem: string } | undefined;

beforeAll(async () => {
  const t0 = performance.now();
  challengeServer = createHttpServer((req, res) => {
    vaRequests.push(req.url ?? '');
    const m = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '');
    const keyAuth = m ? challenges.get(m[1] as string) : undefined;
    if (!keyAuth) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(keyAuth);
  });
  // Bind first and hand the bound port to Pebble, so no other process can take it in between.
  await new Promise<void>((r) => challengeServer.listen(0, '127.0.0.1', r));
  httpPort = (challengeServer.address() as AddressInfo).port;
  const [tlsPort] = (await freePorts(1)) as [number];
  pebble = await startPebble({ httpPort, tlsPort });
  startMs.pebble = performance.now() - t0;

  // acme-client talks through its exported axios instance: trust Pebble's endpoint CA there, and only there.
  acme.axios.defaults.httpsAgent = new Agent({ ca: pebble.endpointCaPem });
  acme.axios.defaults.proxy = false;
  // acme-client retries network errors 5 times, 5 s apart and growing: a broken setup would only show as a timeout.
  const defaults = acme.axios.defaults as { acmeSettings?: { retryMaxAttempts: number; retryDefaultDelay: number } };
  if (defaults.acmeSettings) Object.assign(defaults.acmeSettings, { retryMaxAttempts: 1, retryDefaultDelay: 0.2 });
});

afterAll(async () => {
  await pebble?.stop();
  await new Promise((r) => challengeServer?.close(r));
  // Timings for the report; they are not assertions.
  console.info(`pebble harness timings (ms): ${JSON.stringify(startMs)}`);
});

describe('Pebble harness', () => {
  it('serves the ACME directory over HTTPS signed by the generated endpoint CA only', async () => {
    expect(pebble.directoryUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/dir$/);
    expect(pebble.endpointCaPem).toContain('BEGIN CERTIFICATE');
    expect(existsSync(pebble.endpointCaFile)).toBe(true);
    const ok = await run('curl', ['-sS', '--noproxy', '*', '--cacert', pebble.endpointCaFile, pebble.directoryUrl]);
    expect(JSON.parse(ok.stdout)).toHaveProperty('newOrder');
    // Without the endpoint CA the directory is not trusted.
    await expect(run('curl', ['-sS', '--noproxy', '*', pebble.directoryUrl])).rejects.toMatchObject({ code: 60 });
  });

  it('completes one real HTTP-01 order with acme-client and issues a chain to the issuer root', async () => {
    const t0 = performance.now();
    const client = new acme.Client({
      directoryUrl: pebble.directoryUrl,
      accountKey: await acme.crypto.createPrivateEcdsaKey(),
      backoffMin: 100,
      backoffMax: 1000,
    });
    const [key, csr] = await acme.crypto.createCsr({ commonName: 'harness.test' }, await acme.crypto.createPrivateEcdsaKey());
    const created: string[] = [];
    const chainPem = await client.auto({
      csr,
      termsOfServiceAgreed: true,
      challengePriority: ['http-01'],
      skipChallengeVerification: true, // acme-client would resolve harness.test itself
      challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
        expect(challenge.type).toBe('http-01');
        created.push(challenge.token);
        challenges.set(challenge.token, keyAuthorization);
      },
      challengeRemoveFn: async (_authz, challenge) => {
        challenges.delete(challenge.token);
      },
    });
    startMs.issuance = performance.now() - t0;
    expect(client.getAccountUrl()).toMatch(/^https:\/\/127\.0\.0\.1:\d+\//);

    // Pebble's validation authority really fetched the token from our server on httpPort.
    expect(created).toHaveLength(1);
    expect(vaRequests).toContain(`/.well-known/acme-challenge/${created[0]}`);
    expect(challenges.size).toBe(0);

    const pems = chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    expect(pems.length).toBeGreaterThanOrEqual(2);
    const [leaf, intermediate] = pems.map((p) => new X509Certificate(p)) as [X509Certificate, X509Certificate];
    const root = new X509Certificate(await pebble.issuerRootPem());
    expect(leaf.subjectAltName).toBe('DNS:harness.test');
    expect(leaf.checkIssued(intermediate)).toBe(true);
    expect(leaf.verify(intermediate.publicKey)).toBe(true);
    expect(intermediate.checkIssued(root)).toBe(true);
    expect(intermediate.verify(root.publicKey)).toBe(true);
    // The issuer root is not the endpoint CA.
    expect(root.verify(new X509Certificate(pebble.endpointCaPem).publicKey)).toBe(false);
    issued = { certPem: chainPem, keyPem: key.toString() };
  });

  it('the issued chain passes a TLS handshake that trusts only the issuer root (node and curl)', async () => {
    expect(issued).toBeDefined();
    if (!issued) return;
    const server: HttpsServer = createHttpsServer({ cert: issued.certPem, key: issued.keyPem }, (_req, res) => res.end('issued by pebble'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    try {
      const get = (ca: string) =>
        new Promise<string>((resolve, reject) => {
          const req = request({ host: '127.0.0.1', port, servername: 'harness.test', ca, agent: false, path: '/' }, (res) => {
            let body = '';
            res.on('data', (c: Buffer) => {
              body += c.toString();
            });
            res.on('end', () => resolve(body));
          });
          req.on('error', reject);
          req.end();
        });
      await expect(get(await pebble.issuerRootPem())).resolves.toBe('issued by pebble');
      await expect(get(pebble.endpointCaPem)).rejects.toMatchObject({ code: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' });

      const { stdout } = await run('curl', [
        '-sS',
        '--noproxy',
        '*',
        '--cacert',
        await pebble.issuerRootFile(),
        '--resolve',
        `harness.test:${port}:127.0.0.1`,
        `https://harness.test:${port}/`,
      ]);
      expect(stdout).toBe('issued by pebble');
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('answers DNS: every name is 127.0.0.1, TXT records come and go with setTxt/clearTxt', async () => {
    const resolver = new Resolver({ timeout: 1_000, tries: 2 });
    resolver.setServers([pebble.dnsServer]);
    await expect(resolver.resolve4('anything.harness.test')).resolves.toEqual(['127.0.0.1']);

    const name = '_allegra-challenge.custom.example';
    await expect(resolver.resolveTxt(name)).rejects.toMatchObject({ code: expect.stringMatching(/ENODATA|ENOTFOUND/) });
    await pebble.setTxt(name, 'allegra-proof=abc123');
    await pebble.setTxt(`${name}.`, 'second value');
    const txt = (await resolver.resolveTxt(name)).map((chunks) => chunks.join('')).sort();
    expect(txt).toEqual(['allegra-proof=abc123', 'second value']);
    await pebble.clearTxt(name);
    await expect(resolver.resolveTxt(name)).rejects.toMatchObject({ code: expect.stringMatching(/ENODATA|ENOTFOUND/) });
  });

  it('stop() ends Pebble and challtestsrv and removes the temp dir', async () => {
    const caFile = pebble.endpointCaFile;
    const rootFile = await pebble.issuerRootFile();
    expect(existsSync(rootFile)).toBe(true);
    const t0 = performance.now();
    await pebble.stop();
    startMs.stop = performance.now() - t0;
    expect(existsSync(caFile)).toBe(false);
    expect(existsSync(rootFile)).toBe(false);
    await expect(run('curl', ['-sS', '--noproxy', '*', '-k', '--max-time', '2', pebble.directoryUrl])).rejects.toMatchObject({ code: 7 }); // CURLE_COULDNT_CONNECT
    const resolver = new Resolver({ timeout: 300, tries: 1 });
    resolver.setServers([pebble.dnsServer]);
    await expect(resolver.resolve4('anything.harness.test')).rejects.toThrow();
    await pebble.stop(); // idempotent
  });
});
