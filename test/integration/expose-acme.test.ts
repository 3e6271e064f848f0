/**
 * `allegra expose` end to end against Pebble (a real ACME server): an agent process, gateway processes
 * with ACME, real replicas, curl trusting only Pebble's root. Renewal runs on the local-CA issuer, whose
 * certificate lifetime can be made a few seconds.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon, stopDaemon } from '../../cli/children.js';
import { keys } from '../../protocol/keys.js';
import { domainToken } from '../../quorum-agent/domains.js';
import { freePort } from '../../quorum-agent/ports.js';
import { EmbeddedHost } from '../../registry/embedded.js';
import { CLI, cliJson, runCli } from '../helpers/cli.js';
import { type Pebble, startPebble } from '../helpers/pebble.js';
import { sleep, tempDir, waitFor } from '../helpers/tmp.js';

const run = promisify(execFile);
const ECHO_APP = fileURLToPath(new URL('../fixtures/echo-app/', import.meta.url));

describe('allegra expose with ACME (Pebble) and the local CA', () => {
  const dir = tempDir('allegra-acme-');
  const registryDir = join(dir.path, 'registry');
  let registry: EmbeddedHost;
  let pebble: Pebble;
  let httpPort: number;
  let httpsPort: number;
  let agent: Daemon;
  const gateways = new Map<string, Daemon>();
  let env: Record<string, string>;
  let root: string;

  const startGateway = async (name: string, args: string[]) => {
    const g = await startDaemon(
      name,
      ['gateway', '--registry', `embedded:${registryDir}`, '--admin', '0', '--log', join(dir.path, `${name}.log`), ...args],
      30_000,
      CLI,
    );
    gateways.set(name, g);
    return g;
  };
  const acmeArgs = (challenge: string) => [
    '--acme-directory',
    pebble.directoryUrl,
    '--acme-ca',
    pebble.endpointCaFile,
    '--acme-challenge',
    challenge,
  ];
  /** GET https://host:port/hello trusting only `ca`; the replica reports the Host it saw (with the port). */
  const curlHttps = (host: string, port = httpsPort, ca = root) =>
    run('curl', ['-sS', '--fail', '--cacert', ca, '--resolve', `${host}:${port}:127.0.0.1`, `https://${host}:${port}/hello`]).then((r) => {
      const body = JSON.parse(r.stdout) as { app: string; host: string };
      return { ...body, host: body.host.replace(`:${port}`, '') };
    });
  const ordersIn = (name: string, host: string) =>
    readFileSync(join(dir.path, `${name}.log`), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"ordering certificate"') && l.includes(`"host":"${host}"`)).length;

  beforeAll(async () => {
    httpPort = await freePort();
    httpsPort = await freePort();
    pebble = await startPebble({ httpPort, tlsPort: httpsPort });
    root = await pebble.issuerRootFile();
    registry = await EmbeddedHost.start(registryDir);
    await registry.put(keys.network(), JSON.stringify({ baseDomain: 'localhost', quorumSize: 1, httpsPort }));
    agent = await startDaemon(
      'agent',
      [
        'agent',
        '--registry',
        `embedded:${registryDir}`,
        '--listen',
        '127.0.0.1:0',
        '--data',
        join(dir.path, 'agent'),
        '--log',
        join(dir.path, 'agent.log'),
        '--dns-resolver',
        pebble.dnsServer,
      ],
      30_000,
      CLI,
    );
    env = { ALLEGRA_HOME: join(dir.path, 'home'), ALLEGRA_RPC: String(agent.ready.rpc) };
    await cliJson(['keys', 'init'], env);
    await waitFor(async () => (await registry.list('quorums/')).items.length > 0, { what: 'a quorum' });
    for (const app of ['one', 'alpn', 'race', 'custom']) await cliJson(['create', app, '--replicas', '1:1', '--from', ECHO_APP], env);
  }, 120_000);

  afterAll(async () => {
    await Promise.allSettled([...gateways.values(), agent].filter(Boolean).map((d) => stopDaemon(d, 3_000)));
    await registry?.close();
    await pebble?.stop();
    dir.cleanup();
  });

  it('issues over HTTP-01 and serves the app with the right name; records the time to the first good HTTPS answer', async () => {
    await startGateway('gw-http01', ['--http', String(httpPort), '--https', String(httpsPort), ...acmeArgs('http-01')]);
    const t0 = Date.now();
    const out = await cliJson<{ url: string; host: string; certificate: { issuer: string } }>(['expose', 'one', '--port', '3000'], env);
    expect(out.url).toBe(`https://one.localhost:${httpsPort}/`);
    expect(out.certificate.issuer).toBe('acme');
    const body = await waitFor(() => curlHttps('one.localhost').catch(() => undefined), { timeoutMs: 10_000, what: 'good HTTPS answer' });
    const ms = Date.now() - t0;
    console.info(`expose → first good HTTPS response (HTTP-01, Pebble): ${ms} ms`);
    expect(body).toMatchObject({ app: 'echo', host: 'one.localhost' });
    const status = JSON.parse((await registry.get(keys.certStatus('one.localhost')))?.value ?? '{}');
    expect(status.state).toBe('issued');
    // Plain HTTP now redirects to HTTPS (the default for exposed routes).
    const redirect = await run('curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code} %{redirect_url}',
      '-H',
      'Host: one.localhost',
      `http://127.0.0.1:${httpPort}/x`,
    ]);
    expect(redirect.stdout).toBe(`308 https://one.localhost:${httpsPort}/x`);
  });

  it('issues over TLS-ALPN-01 through the acme-tls/1 path of the HTTPS listener', async () => {
    await stopDaemon(gateways.get('gw-http01') as Daemon);
    await startGateway('gw-alpn', ['--http', String(httpPort), '--https', String(httpsPort), ...acmeArgs('tls-alpn-01')]);
    const seen: string[] = [];
    const watch = registry.watch(keys.certStatus('alpn.localhost'), (events) => seen.push(...events.map((e) => e.value ?? '')));
    await cliJson(['expose', 'alpn', '--port', '3000'], env);
    watch.close();
    expect(seen.some((v) => v.includes('tls-alpn-01 challenge'))).toBe(true);
    expect(await curlHttps('alpn.localhost')).toMatchObject({ host: 'alpn.localhost' });
    // The earlier certificate is served by the new gateway too: certificates are shared, not per gateway.
    expect(await curlHttps('one.localhost')).toMatchObject({ host: 'one.localhost' });
  });

  it('lets two racing gateways place exactly one order', async () => {
    const other = await startGateway('gw-race', ['--http', '0', '--https', '0', ...acmeArgs('http-01')]);
    expect(other).toBeDefined();
    await cliJson(['expose', 'race', '--port', '3000'], env);
    await sleep(1_000);
    expect(ordersIn('gw-alpn', 'race.localhost') + ordersIn('gw-race', 'race.localhost')).toBe(1);
    expect((await registry.get(keys.cert('race.localhost')))?.version).toBe(1);
    expect(await curlHttps('race.localhost')).toMatchObject({ host: 'race.localhost' });
  });

  it('never orders for a host without a route', async () => {
    const handshake = await run('curl', [
      '-s',
      '--cacert',
      root,
      '--resolve',
      `stranger.localhost:${httpsPort}:127.0.0.1`,
      `https://stranger.localhost:${httpsPort}/`,
    ]).then(
      () => 'ok',
      (err: { code?: number }) => `failed ${err.code}`,
    );
    expect(handshake).toMatch(/^failed/);
    const challenge = await run('curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '-H',
      'Host: stranger.localhost',
      `http://127.0.0.1:${httpPort}/.well-known/acme-challenge/anything`,
    ]);
    expect(challenge.stdout).toBe('404');
    await sleep(2_500); // a full check interval of every gateway
    expect(await registry.get(keys.certStatus('stranger.localhost'))).toBeUndefined();
    expect(ordersIn('gw-alpn', 'stranger.localhost') + ordersIn('gw-race', 'stranger.localhost')).toBe(0);
  });

  it('never orders for a route record its owner did not sign, whoever wrote it into the registry', async () => {
    // A route with TLS written straight into the registry (no owner's grant): gateways neither serve it
    // nor ask the CA for its name.
    const forged = {
      host: 'forged.localhost',
      instanceId: 'i-000000000000',
      instanceName: 'forged',
      kind: 'network',
      createdAt: Date.now(),
      tls: { redirectHttp: false },
    };
    await registry.put(keys.route('forged.localhost'), JSON.stringify(forged));
    await sleep(2_500);
    expect(await registry.get(keys.certStatus('forged.localhost'))).toBeUndefined();
    expect(ordersIn('gw-alpn', 'forged.localhost') + ordersIn('gw-race', 'forged.localhost')).toBe(0);
    await registry.delete(keys.route('forged.localhost'));
  });

  it('refuses a custom domain without proof of control, and accepts it after a DNS TXT proof', async () => {
    const refused = await runCli(['expose', 'custom', '--port', '3000', '--domain', 'shop.example.com'], env);
    // The instance is the caller's: a missing proof is a refusal (exit 1), not "not yours" (exit 3).
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/prove control of shop\.example\.com/);
    expect(await registry.get(keys.route('shop.example.com'))).toBeUndefined();
    const taken = await runCli(['expose', 'custom', '--port', '3000', '--domain', 'one.localhost'], env);
    expect(taken.code).not.toBe(0);

    const owner = (await cliJson<{ publicKey: string }>(['keys', 'show'], env)).publicKey;
    await pebble.setTxt('_allegra-challenge.shop.example.com', domainToken(owner, 'shop.example.com'));
    const out = await cliJson<{ url: string }>(['expose', 'custom', '--port', '3000', '--domain', 'shop.example.com'], env);
    expect(out.url).toBe(`https://shop.example.com:${httpsPort}/`);
    expect(await curlHttps('shop.example.com')).toMatchObject({ host: 'shop.example.com' });
  });

  it('renews a short-lived certificate without a failed request (local CA)', async () => {
    // The local-CA gateway must be the only issuer for this host.
    for (const name of ['gw-alpn', 'gw-race']) await stopDaemon(gateways.get(name) as Daemon);
    const lport = await freePort();
    const local = await startGateway('gw-local', [
      '--http',
      '0',
      '--https',
      String(lport),
      '--local-ca',
      join(dir.path, 'ca'),
      '--cert-validity',
      '6',
    ]);
    const localRoot = join(dir.path, 'ca', 'root.crt');
    const reg2 = registry;
    await cliJson(['create', 'renew', '--replicas', '1:1', '--from', ECHO_APP], env);
    await cliJson(['expose', 'renew', '--port', '3000', '--no-redirect'], env);
    const first = JSON.parse((await reg2.get(keys.cert('renew.localhost')))?.value ?? '{}') as { notAfter: number; issuer: string };
    expect(first.issuer).toBe('local');
    let ok = 0;
    const failures: string[] = [];
    const until = Date.now() + 7_000;
    while (Date.now() < until) {
      try {
        expect(await curlHttps('renew.localhost', lport, localRoot)).toMatchObject({ host: 'renew.localhost' });
        ok++;
      } catch (err) {
        failures.push(`${(err as { stderr?: string }).stderr ?? ''} ${(err as Error).message}`.slice(0, 300));
      }
    }
    const second = JSON.parse((await reg2.get(keys.cert('renew.localhost')))?.value ?? '{}') as { notAfter: number };
    expect(second.notAfter).toBeGreaterThan(first.notAfter);
    const why = readFileSync(join(dir.path, 'gw-local.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"upstream request failed"') && l.includes('renew.localhost'))
      .slice(0, 3);
    expect({ failures: failures.slice(0, 3), why }).toEqual({ failures: [], why: [] });
    expect(ok).toBeGreaterThan(10);
    expect(local).toBeDefined();
  });
});
