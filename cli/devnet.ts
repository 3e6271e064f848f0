/**
 * `allegra devnet`: a whole network on one machine. The embedded registry is hosted in this process; the
 * agents and the gateway are child processes, exactly as they run on separate machines.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalCa } from '../cert/local-ca.js';
import { RpcClient } from '../protocol/client.js';
import { AllegraError } from '../protocol/errors.js';
import { keys, PREFIX } from '../protocol/keys.js';
import type { Registry } from '../protocol/registry.js';
import type { Role } from '../protocol/roles.js';
import type { InstanceSpec, InstanceStatus, NetworkConfig } from '../protocol/types.js';
import { probeSandbox } from '../quorum-agent/sandbox/support.js';
import { DEFAULT_UID_RANGE } from '../quorum-agent/sandbox/uids.js';
import { TOKEN_ENV } from '../registry/credentials.js';
import { EmbeddedHost } from '../registry/embedded.js';
import { CREDENTIALS_ENV, credentialsFileOf } from '../registry/etcd-credentials.js';
import { openRegistry } from '../registry/open.js';
import { bundle } from './bundle.js';
import { allegraHome, ensureKey, keyPath, writeConfig } from './config.js';
import { parsePort } from './daemon-commands.js';
import { CliError, type Output } from './output.js';
import { SupervisedDaemon, withArg } from './supervise.js';

export interface DevnetOptions {
  agents?: string;
  http?: string;
  https?: string;
  rpc?: string;
  admin?: string;
  data?: string;
  registry?: string;
  registryCredentials?: string;
  baseDomain?: string;
  demo?: boolean;
  key?: string;
  acmeDirectory?: string;
  acmeCa?: string;
  wasmCache?: string;
  drivers?: string;
  vmAccel?: string;
}

const DEMO_DIR = fileURLToPath(new URL('../../examples/demo/', import.meta.url));

/**
 * The devnet's registry, opened as admin, and the environment that hands each child the credential of its
 * role: the embedded host's token in ALLEGRA_REGISTRY_TOKEN, or for etcd the role's file beside the admin's
 * (as `allegra registry setup-auth` writes them) in ALLEGRA_REGISTRY_CREDENTIALS.
 */
async function openDevnetRegistry(
  url: string,
  credentialsFile: string | undefined,
): Promise<{ registry: Registry; childEnv: (role: Role) => Record<string, string> }> {
  if (url.startsWith('embedded:')) {
    try {
      const host = await EmbeddedHost.start(url.slice('embedded:'.length));
      return { registry: host, childEnv: (role) => ({ [TOKEN_ENV]: host.credential(role) }) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE')
        throw new CliError(`another devnet already runs on ${url}; stop it or pass --data DIR`, 1);
      throw err;
    }
  }
  const file = credentialsFile ?? process.env[CREDENTIALS_ENV];
  const registry = await openRegistry(url, { role: 'admin', ...(file ? { credentialsFile: file } : {}) });
  return {
    registry,
    childEnv: (role): Record<string, string> => (file ? { [CREDENTIALS_ENV]: credentialsFileOf(dirname(file), role) } : {}),
  };
}

/** A devnet pointed at an unreachable ACME directory fails at once with the reason, not after a minute. */
async function checkAcmeDirectory(url: string, caFile: string | undefined): Promise<void> {
  const { Agent, request } = await import('undici');
  const dispatcher = new Agent({ connect: { timeout: 5_000, ...(caFile ? { ca: readFileSync(caFile) } : {}) } });
  try {
    const res = await request(url, { dispatcher, headersTimeout: 5_000, bodyTimeout: 5_000 });
    const body = (await res.body.json().catch(() => undefined)) as { newOrder?: unknown } | undefined;
    if (res.statusCode !== 200 || typeof body?.newOrder !== 'string')
      throw new CliError(`--acme-directory ${url} is not an ACME directory (HTTP ${res.statusCode})`);
  } catch (err) {
    if (err instanceof CliError) throw err;
    const e = err as Error & { cause?: Error };
    throw new CliError(`cannot reach the ACME directory ${url}: ${e.cause?.message ?? e.message}`);
  } finally {
    await dispatcher.close();
  }
}

async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new CliError(`devnet: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function devnetCommand(opts: DevnetOptions, out: Output): Promise<void> {
  const agentCount = Number(opts.agents ?? 3);
  if (!Number.isInteger(agentCount) || agentCount < 1 || agentCount > 32) throw new CliError('--agents expects a number from 1 to 32', 2);
  const httpPort = parsePort(opts.http, '--http', 8080);
  const httpsPortWanted = parsePort(opts.https, '--https', 8443);
  const rpcBase = parsePort(opts.rpc, '--rpc', 7070);
  const adminPort = parsePort(opts.admin, '--admin', 9090);
  const dataDir = opts.data ?? join(allegraHome(), 'devnet');
  const registryUrl = opts.registry ?? `embedded:${join(dataDir, 'registry')}`;
  const baseDomain = (opts.baseDomain ?? 'localhost').toLowerCase();
  const progress = out.progress('starting registry');

  const { registry, childEnv } = await openDevnetRegistry(registryUrl, opts.registryCredentials);
  const daemons: SupervisedDaemon[] = [];
  let stopping = false;
  const stopAll = async () => {
    stopping = true;
    await Promise.allSettled(daemons.map((d) => d.stop()));
    await registry.close().catch(() => {});
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    process.stderr.write(`\nallegra devnet: ${signal}, stopping ${daemons.length} processes…\n`);
    void stopAll().then(() => process.exit(0));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    // Certificates: ACME when a directory is given, else a local CA kept in the data dir (like Caddy's
    // internal issuer), created here first so its trust hint can be printed.
    const caDir = join(dataDir, 'ca');
    const localCa = opts.acmeDirectory ? null : await LocalCa.loadOrCreate(caDir);
    const issuerArgs = opts.acmeDirectory
      ? ['--acme-directory', opts.acmeDirectory, ...(opts.acmeCa ? ['--acme-ca', opts.acmeCa] : [])]
      : ['--local-ca', caDir];
    await registry.put(keys.network(), JSON.stringify({ baseDomain, quorumSize: 3 } satisfies NetworkConfig));

    // The developer's key, with or without the demo: the next `allegra create` signs with it.
    const { keyPair: devKey } = ensureKey(keyPath(opts.key));
    if (opts.acmeDirectory) {
      progress.update(`checking the ACME directory ${opts.acmeDirectory}`);
      await checkAcmeDirectory(opts.acmeDirectory, opts.acmeCa);
    }
    // Replicas run sandboxed where the host can; where it can't (no root, no bubblewrap), the agents still
    // run the developer's own instances, so `npm start` works on a fresh machine.
    const sandbox = probeSandbox();
    const trustArgs: string[] = [];
    if (!sandbox.ok) {
      trustArgs.push('--trusted-owner', devKey.publicKeyHex);
      process.stderr.write(
        `allegra devnet: this host cannot sandbox replicas (${sandbox.reason}); your own instances run unsandboxed, others are refused\n`,
      );
    }
    progress.update(`starting ${agentCount} quorum agents`);
    // Every daemon is supervised: one that dies is restarted (same ports, same data dir) and reported.
    const report = (line: string) => {
      if (!stopping) process.stderr.write(`allegra devnet: ${line}; logs in ${join(dataDir, 'logs')}\n`);
    };
    const agentStarts = Array.from({ length: agentCount }, (_, i) => {
      const args = [
        'agent',
        '--registry',
        registryUrl,
        '--listen',
        `127.0.0.1:${rpcBase === 0 ? 0 : rpcBase + i}`,
        '--data',
        join(dataDir, `agent-${i}`),
        '--log',
        join(dataDir, 'logs', `agent-${i}.log`),
        // Agents on one host need disjoint uid ranges, or two tenants could share a uid.
        '--uid-range',
        `${DEFAULT_UID_RANGE.first + i * DEFAULT_UID_RANGE.count}+${DEFAULT_UID_RANGE.count}`,
        // One compile of a wasm app for the whole machine, not one per agent.
        '--wasm-cache',
        opts.wasmCache ?? join(dataDir, 'wasm-cache'),
        '--drivers',
        opts.drivers ?? 'process,wasm',
        '--vm-accel',
        opts.vmAccel ?? 'auto',
        // One VM image for the whole machine too.
        '--vm-images',
        join(dataDir, 'vm-images'),
        ...trustArgs,
      ];
      return new SupervisedDaemon(`agent-${i}`, args, {
        env: childEnv('agent'),
        report,
        restartArgs: (ready) => withArg(args, '--listen', `127.0.0.1:${new URL(String(ready.rpc)).port}`),
      }).start();
    });
    const gatewayArgs = [
      'gateway',
      '--registry',
      registryUrl,
      '--http',
      String(httpPort),
      '--https',
      String(httpsPortWanted),
      '--admin',
      String(adminPort),
      '--log',
      join(dataDir, 'logs', 'gateway.log'),
      ...issuerArgs,
    ];
    const gatewayStart = new SupervisedDaemon('gateway', gatewayArgs, {
      env: childEnv('gateway'),
      report,
      restartArgs: (ready) =>
        withArg(
          withArg(withArg(gatewayArgs, '--http', String(ready.http)), '--https', String(ready.https)),
          '--admin',
          String(ready.admin),
        ),
    }).start();
    const started = await Promise.allSettled([...agentStarts, gatewayStart]);
    for (const s of started) if (s.status === 'fulfilled') daemons.push(s.value);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw new CliError(`devnet: ${(failed.reason as Error).message}`);

    const agents = daemons.filter((d) => d.ready.role === 'agent');
    const gateway = daemons.find((d) => d.ready.role === 'gateway') as SupervisedDaemon;
    const nodeIds = agents.map((a) => String(a.ready.node));
    const rpcUrl = String(agents[0]?.ready.rpc);
    const http = `http://127.0.0.1:${gateway.ready.http}`;
    const httpsPort = Number(gateway.ready.https);
    const https = `https://127.0.0.1:${httpsPort}`;
    await registry.put(
      keys.network(),
      JSON.stringify({ baseDomain, quorumSize: 3, httpsPort, httpPort: Number(gateway.ready.http) } satisfies NetworkConfig),
    );

    progress.update('forming quorums');
    await waitFor('quorums to include every agent', 20_000, async () => {
      const { items } = await registry.list(PREFIX.quorums);
      const members = new Set(items.flatMap((kv) => (JSON.parse(kv.value) as { members: string[] }).members));
      return nodeIds.every((id) => members.has(id)) ? true : undefined;
    });

    writeConfig({ rpc: agents.map((a) => String(a.ready.rpc)), http, https, dataDir });
    const instances: Array<{ name: string; url: string; https: string | null }> = [];
    if (opts.demo !== false) {
      progress.update('deploying the demo app');
      const rpc = new RpcClient(rpcUrl, devKey);
      try {
        await rpc.call({ method: 'POST', path: '/v1/instances', body: { json: { name: 'demo', cmd: 'node server.mjs' } } });
      } catch (err) {
        if (!(err instanceof AllegraError && err.code === 'conflict')) throw err;
      }
      const bundled = await bundle(DEMO_DIR);
      const bytes = readFileSync(bundled.file);
      bundled.cleanup();
      const deployed = await rpc.call<{ instance: InstanceSpec }>({
        method: 'PUT',
        path: '/v1/instances/demo/code',
        body: { bytes },
        headers: { 'x-allegra-cmd': 'node%20server.mjs' },
      });
      progress.update('waiting for demo replicas');
      await waitFor('demo replicas to become healthy', 30_000, async () => {
        const s = await rpc.call<InstanceStatus>({ method: 'GET', path: '/v1/instances/demo' });
        const healthy = s.replicas.filter((r) => r.healthy && r.version >= deployed.instance.version).length;
        return healthy >= deployed.instance.replicas.min ? true : undefined;
      });
      progress.update('exposing the demo app over HTTPS');
      const exposed = await rpc.call<{ url: string; host: string }>({
        method: 'POST',
        path: '/v1/instances/demo/expose',
        body: { json: { port: 3000, redirectHttp: false } },
      });
      // Waiting says what the issuer is doing, and gives up on the first failed attempt with its reason:
      // the devnet serves plain HTTP meanwhile and the gateway keeps retrying the certificate.
      const certNote = await waitFor('the demo certificate', 60_000, async () => {
        const { certificates } = await rpc.call<{
          certificates: Array<{ host: string; notAfter: number | null; status: { state: string; detail: string } | null }>;
        }>({ method: 'GET', path: '/v1/instances/demo/certificates' });
        const cert = certificates.find((c) => c.host === exposed.host);
        if (cert?.notAfter) return '';
        if (cert?.status) progress.update(`demo certificate: ${cert.status.state}: ${cert.status.detail}`);
        return cert?.status?.state === 'failed' ? `no certificate yet for ${exposed.host}: ${cert.status.detail} (retrying)` : undefined;
      });
      if (certNote) process.stderr.write(`allegra devnet: ${certNote}\n`);
      instances.push({ name: 'demo', url: `http://demo.${baseDomain}:${gateway.ready.http}/`, https: exposed.url });
    }
    progress.succeed('devnet is up');

    out.result(
      {
        http,
        https,
        rpc: rpcUrl,
        admin: `http://127.0.0.1:${gateway.ready.admin}`,
        agents: agents.map((a) => ({ node: a.ready.node, rpc: a.ready.rpc, pid: a.pid })),
        gateway: { pid: gateway.pid },
        registry: registryUrl,
        sandboxed: sandbox.ok,
        data: dataDir,
        ca: localCa ? localCa.rootCertPath : null,
        instances,
      },
      () =>
        [
          'Allegra devnet is up',
          `  gateway   ${http}   (admin http://127.0.0.1:${gateway.ready.admin}/metrics)`,
          `  agents    ${agents.map((a) => a.ready.rpc).join('  ')}`,
          `  registry  ${registryUrl}`,
          `  replicas  ${sandbox.ok ? `sandboxed (bubblewrap ${sandbox.bwrapVersion}, cgroup v${sandbox.cgroups.version})` : 'unsandboxed (your own instances only)'}`,
          ...instances.flatMap((i) => [
            `  ${i.name.padEnd(8)}  ${i.url}   or: curl -H 'Host: ${i.name}.${baseDomain}' ${http}/`,
            ...(i.https ? [`  ${''.padEnd(8)}  ${i.https}`] : []),
          ]),
          // The HTTPS port serves names with certificates only: a bare address has none.
          `  https     port ${httpsPort}, names under ${baseDomain}${localCa ? `; certificates from the local CA ${localCa.rootCertPath}` : ''}`,
          ...(localCa ? [`  trust it  ${localCa.trustHint()}`] : []),
          `  logs      allegra logs NAME (replica output); daemons: ${join(dataDir, 'logs')}`,
          '  CLI       configured for this devnet: try `allegra list`',
          `  failures  kill -9 ${agents[0]?.pid ?? '<pid>'} (agent-0; others: ${agents
            .slice(1)
            .map((a) => a.pid)
            .join(', ')}; gateway: ${gateway.pid}): the devnet restarts it, traffic and the CLI carry on`,
          'Press Ctrl-C to stop.',
        ].join('\n'),
    );
  } catch (err) {
    progress.fail('devnet failed to start');
    await stopAll();
    throw err;
  }
  // Keep running until a signal arrives.
  await new Promise<never>(() => {});
}
