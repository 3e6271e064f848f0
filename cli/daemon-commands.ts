/**
 * `allegra agent` and `allegra gateway`: long-running processes. When started by `allegra devnet` they
 * report readiness over the IPC channel and exit when it closes, so a killed devnet leaves no orphans.
 */
import cluster from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import type { Logger } from 'pino';
import { AcmeIssuer } from '../cert/acme.js';
import { LocalCa } from '../cert/local-ca.js';
import { LocalCaIssuer } from '../cert/local-issuer.js';
import { CertManager } from '../cert/manager.js';
import { loadGatewayConfig } from '../gateway/config.js';
import { type GatewayOptions, startGateway } from '../gateway/server.js';
import type { Registry } from '../protocol/registry.js';
import { isRole, ROLES, type Role } from '../protocol/roles.js';
import { DRIVERS } from '../protocol/schemas.js';
import type { DriverName } from '../protocol/types.js';
import { Agent } from '../quorum-agent/agent.js';
import { parseUidRange, type UidRange } from '../quorum-agent/sandbox/uids.js';
import type { AccelChoice } from '../quorum-agent/vm/accel.js';
import { TOKEN_ENV } from '../registry/credentials.js';
import { CREDENTIALS_ENV } from '../registry/etcd-credentials.js';
import { openRegistry } from '../registry/open.js';
import { makeLogger } from './log.js';
import { machineId } from './machine.js';
import { CliError } from './output.js';

export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(value) ?? /^()()(\d+)$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new CliError(`--listen expects HOST:PORT, e.g. 127.0.0.1:7070 (got "${value}")`, 2);
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

/** `--drivers process,wasm`: the drivers a node offers (node records advertise them). */
export function parseDrivers(value: string | undefined): DriverName[] | undefined {
  if (value === undefined) return undefined;
  const names = value
    .split(',')
    .map((d) => d.trim())
    .filter(Boolean);
  const bad = names.find((d) => !(DRIVERS as readonly string[]).includes(d));
  if (bad !== undefined || names.length === 0)
    throw new CliError(`--drivers expects a comma-separated list of ${DRIVERS.join(', ')} (got "${value}")`, 2);
  return [...new Set(names)] as DriverName[];
}

export function parsePort(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CliError(`${flag} expects a port number (got "${value}")`, 2);
  return port;
}

/** How a daemon picks its registry role and credentials (`--registry-role`, `--registry-credentials`). */
export interface RegistryCliOptions {
  registry: string;
  registryRole?: string;
  registryCredentials?: string;
}

export async function openOrFail(opts: RegistryCliOptions, defaultRole: Role): Promise<Registry> {
  const role = opts.registryRole ?? defaultRole;
  if (!isRole(role)) throw new CliError(`--registry-role expects one of ${ROLES.join(', ')} (got "${role}")`, 2);
  try {
    return await openRegistry(opts.registry, { role, ...(opts.registryCredentials ? { credentialsFile: opts.registryCredentials } : {}) });
  } catch (err) {
    throw new CliError(`cannot open registry ${opts.registry}: ${(err as Error).message}`, 1);
  } finally {
    // Read once: nothing this process starts (replicas above all) inherits the credential.
    delete process.env[TOKEN_ENV];
    delete process.env[CREDENTIALS_ENV];
  }
}

/** Stops `stop` on SIGINT/SIGTERM or when the parent's IPC channel closes; exits afterwards. */
export function runUntilStopped(log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const shutdown = (why: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    void stop()
      .catch((err) => log.error({ err }, 'error while stopping'))
      .finally(() => {
        log.flush?.();
        process.exit(0);
      });
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  if (process.send) process.on('disconnect', () => shutdown('parent exited'));
}

export async function agentCommand(
  opts: RegistryCliOptions & {
    listen?: string;
    data?: string;
    region?: string;
    capacity?: string;
    log?: string;
    dnsResolver?: string;
    uidRange?: string;
    trustedOwner?: string[];
    allowUnsandboxed?: boolean;
    advertise?: string;
    ingressPort?: string;
    drivers?: string;
    wasmCache?: string;
    vmAccel?: string;
    vmImages?: string;
    sshPort?: string;
    json?: boolean;
  },
): Promise<void> {
  const listen = parseListen(opts.listen ?? '127.0.0.1:7070');
  const drivers = parseDrivers(opts.drivers);
  let uidRange: UidRange | undefined;
  try {
    uidRange = opts.uidRange ? parseUidRange(opts.uidRange) : undefined;
  } catch (err) {
    throw new CliError(`--uid-range: ${(err as Error).message}`, 2);
  }
  const trustedOwners = opts.trustedOwner ?? [];
  const badKey = trustedOwners.find((k) => !/^[0-9a-f]{64}$/.test(k));
  if (badKey !== undefined) throw new CliError(`--trusted-owner expects a 64-character hex public key (got "${badKey}")`, 2);
  const capacity = opts.capacity === undefined ? 16 : Number(opts.capacity);
  if (!Number.isInteger(capacity) || capacity < 0) throw new CliError(`--capacity expects a whole number (got "${opts.capacity}")`, 2);
  const log = makeLogger('agent', opts.log);
  const registry = await openOrFail(opts, 'agent');
  const agent = new Agent({
    registry,
    dataDir: opts.data ?? '.allegra/agent',
    host: listen.host,
    port: listen.port,
    region: opts.region,
    capacity,
    log,
    dnsResolver: opts.dnsResolver,
    sandbox: { uidRange, trustedOwners, allowUnsandboxed: Boolean(opts.allowUnsandboxed) },
    advertise: opts.advertise,
    ingressPort: parsePort(opts.ingressPort, '--ingress-port', 0),
    sshPort: parsePort(opts.sshPort, '--ssh-port', 0),
    machineId: machineId(),
    drivers,
    ...(opts.wasmCache ? { wasmCacheDir: opts.wasmCache } : {}),
    vm: { accel: (opts.vmAccel ?? 'auto') as AccelChoice, ...(opts.vmImages ? { imagesDir: opts.vmImages } : {}) },
  });
  try {
    await agent.start();
  } catch (err) {
    await registry.close();
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(
      code === 'EADDRINUSE' ? `cannot listen on ${opts.listen}: address in use` : `agent failed to start: ${(err as Error).message}`,
    );
  }
  process.send?.({ type: 'ready', role: 'agent', node: agent.nodeId, rpc: agent.rpcUrl, ssh: agent.sshAddress });
  if (!process.send) {
    process.stdout.write(
      opts.json
        ? `${JSON.stringify({ role: 'agent', node: agent.nodeId, rpc: agent.rpcUrl, ssh: agent.sshAddress, sandboxed: agent.sandbox?.ok ?? false })}\n`
        : `agent ${agent.nodeId} serving RPC on ${agent.rpcUrl}, SSH on ${agent.sshAddress}\n`,
    );
    const sandbox = agent.sandbox;
    if (sandbox && !sandbox.ok)
      process.stderr.write(
        `agent: this host cannot sandbox replicas (${sandbox.reason}); ${
          opts.allowUnsandboxed
            ? 'running EVERY instance unsandboxed (--allow-unsandboxed)'
            : trustedOwners.length > 0
              ? `running only ${trustedOwners.length} trusted owner(s)' instances, unsandboxed`
              : 'refusing every instance'
        }\n`,
      );
  }
  runUntilStopped(log, async () => {
    await agent.stop();
    await registry.close();
  });
}

export interface GatewayCliOptions extends RegistryCliOptions {
  http?: string;
  https?: string;
  admin?: string;
  host?: string;
  log?: string;
  workers?: string;
  tlsCert?: string;
  tlsKey?: string;
  proxyProtocol?: boolean;
  trustProxy?: string;
  h2c?: boolean;
  accessLog?: boolean;
  config?: string;
  acmeDirectory?: string;
  acmeCa?: string;
  acmeEmail?: string;
  acmeChallenge?: string;
  localCa?: string;
  certValidity?: string;
  json?: boolean;
}

/** The certificate manager for `--acme-directory` (ACME) or `--local-ca` (devnet's internal CA). */
async function makeCertManager(opts: GatewayCliOptions, registry: Registry, log: Logger): Promise<CertManager | undefined> {
  if (opts.acmeDirectory && opts.localCa) throw new CliError('--acme-directory and --local-ca are alternatives: pick one issuer', 2);
  const holderId = `gw-${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  if (opts.acmeDirectory) {
    const challenge = opts.acmeChallenge ?? 'http-01';
    if (challenge !== 'http-01' && challenge !== 'tls-alpn-01') throw new CliError('--acme-challenge is http-01 or tls-alpn-01', 2);
    const issuer = new AcmeIssuer(
      registry,
      { directoryUrl: opts.acmeDirectory, caFile: opts.acmeCa, email: opts.acmeEmail, challenge },
      log,
    );
    return new CertManager({ registry, issuer, holderId, log }).start();
  }
  if (opts.localCa) {
    const validityMs = opts.certValidity ? Number(opts.certValidity) * 1000 : undefined;
    if (validityMs !== undefined && !(validityMs >= 1000)) throw new CliError('--cert-validity expects seconds (at least 1)', 2);
    const ca = await LocalCa.loadOrCreate(opts.localCa);
    return new CertManager({ registry, issuer: new LocalCaIssuer(ca, validityMs), holderId, log }).start();
  }
  return undefined;
}

export async function gatewayCommand(opts: GatewayCliOptions): Promise<void> {
  const workers = opts.workers === undefined ? 1 : opts.workers === 'auto' ? availableParallelism() : Number(opts.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 256)
    throw new CliError(`--workers expects a number or "auto" (got "${opts.workers}")`, 2);
  if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) throw new CliError('--tls-cert and --tls-key go together', 2);
  let fileConfig: Partial<GatewayOptions> = {};
  try {
    fileConfig = opts.config ? loadGatewayConfig(opts.config) : {};
  } catch (err) {
    throw new CliError((err as Error).message, 2);
  }
  if (workers > 1 && cluster.isPrimary) return gatewayPrimary(opts, workers);
  const log = makeLogger('gateway', opts.log);
  const registry = await openOrFail(opts, 'gateway');
  let gateway: Awaited<ReturnType<typeof startGateway>>;
  try {
    const tls = opts.tlsCert && opts.tlsKey ? { cert: readFileSync(opts.tlsCert), key: readFileSync(opts.tlsKey) } : undefined;
    const certs = await makeCertManager(opts, registry, log);
    gateway = await startGateway({
      ...fileConfig,
      registry,
      log,
      machineId: machineId(),
      host: opts.host ?? '127.0.0.1',
      httpPort: parsePort(opts.http, '--http', 8080),
      httpsPort: parsePort(opts.https, '--https', 8443),
      adminPort: parsePort(opts.admin, '--admin', 9090),
      tls,
      h2c: opts.h2c === false ? false : (fileConfig.h2c ?? true),
      proxyProtocol: Boolean(opts.proxyProtocol) || Boolean(fileConfig.proxyProtocol),
      trustedProxies: opts.trustProxy
        ? opts.trustProxy
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : (fileConfig.trustedProxies ?? []),
      accessLog: opts.accessLog === false ? null : fileConfig.accessLog,
      certs,
    });
  } catch (err) {
    await registry.close();
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(
      code === 'EADDRINUSE'
        ? `gateway port already in use: ${(err as Error).message}`
        : `gateway failed to start: ${(err as Error).message}`,
    );
  }
  process.send?.({ type: 'ready', role: 'gateway', http: gateway.httpPort, https: gateway.httpsPort, admin: gateway.adminPort });
  if (!process.send)
    process.stdout.write(
      opts.json
        ? `${JSON.stringify({ role: 'gateway', http: gateway.httpPort, https: gateway.httpsPort, admin: gateway.adminPort })}\n`
        : `gateway serving HTTP on ${gateway.httpPort}, admin on ${gateway.adminPort}\n`,
    );
  runUntilStopped(log, async () => {
    await gateway.stop();
    await registry.close();
  });
}

/**
 * `--workers N`: one gateway process per core. The primary only forks, restarts crashed workers and relays
 * signals; node:cluster hands each new connection to a worker, so keep-alive traffic costs the primary nothing.
 */
async function gatewayPrimary(opts: { log?: string; json?: boolean }, workers: number): Promise<void> {
  const log = makeLogger('gateway-primary', opts.log);
  let stopping = false;
  const ready = new Map<number, { http: number; admin: number }>();
  const fork = () => {
    const worker = cluster.fork({ ALLEGRA_GATEWAY_WORKER: '1' });
    worker.on('message', (msg: { type?: string; http?: number; admin?: number }) => {
      if (msg?.type !== 'ready') return;
      ready.set(worker.id, { http: Number(msg.http), admin: Number(msg.admin) });
      if (ready.size === workers) {
        const first = [...ready.values()][0] as { http: number; admin: number };
        const pids = Object.values(cluster.workers ?? {}).map((w) => w?.process.pid);
        process.send?.({ type: 'ready', role: 'gateway', http: first.http, admin: first.admin, workers: pids });
        if (!process.send)
          process.stdout.write(
            opts.json
              ? `${JSON.stringify({ role: 'gateway', http: first.http, admin: first.admin, workers: pids })}\n`
              : `gateway serving HTTP on ${first.http} with ${workers} workers, admin on ${first.admin}\n`,
          );
      }
    });
  };
  cluster.on('exit', (worker, code, signal) => {
    ready.delete(worker.id);
    if (stopping) return;
    log.warn({ pid: worker.process.pid, code, signal }, 'gateway worker died; starting another');
    fork();
  });
  for (let i = 0; i < workers; i++) fork();
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    const force = setTimeout(() => process.exit(1), 12_000);
    force.unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
  if (process.send) process.on('disconnect', shutdown);
}
