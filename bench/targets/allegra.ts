/**
 * The Allegra gateway as a benchmark target, run as in production: a real `allegra gateway` process (or
 * several with --workers) reading its routes from a registry, with route lookup, quorum placement,
 * balancing and metrics on the path. The registry is an embedded store hosted by the benchmark process and
 * seeded with one instance whose replicas are the benchmark's upstreams.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { keys } from '../../protocol/keys.js';
import { generateKeyPair } from '../../protocol/signing.js';
import { EmbeddedHost } from '../../registry/embedded.js';
import { seedInstance, seedNode, seedReplica } from '../../registry/seed.js';

export interface AllegraTarget {
  url: string;
  /** Host header to send */
  host: string;
  pids: number[];
  /** Port of the gateway's admin server (/metrics). */
  adminPort: number;
  /** The embedded registry the gateway reads (hosted by this process). */
  registry: EmbeddedHost;
  stop(): Promise<void>;
}

const CLI = fileURLToPath(new URL('../../cli/main.js', import.meta.url));
const HOST = 'bench.localhost';

/** Seeds a registry with one instance on one quorum whose replicas are `upstreams`, signed as agents sign them. */
export async function seedRegistry(registry: EmbeddedHost, upstreams: string[]): Promise<void> {
  const nodes = upstreams.map((_, i) => seedNode(`n-bench${i}`));
  const app = seedInstance(generateKeyPair(), 'bench', 'localhost', {
    cmd: 'bench upstream',
    replicas: { min: upstreams.length, max: upstreams.length },
  });
  const members = nodes.map((n) => n.id);
  await registry.put(keys.network(), JSON.stringify({ baseDomain: 'localhost', quorumSize: nodes.length }));
  await registry.put(keys.quorum('q-bench'), JSON.stringify({ id: 'q-bench', members, capacity: 16 * nodes.length }));
  const replicas = upstreams.map((endpoint, slot) => seedReplica(nodes[slot] as (typeof nodes)[number], app.spec.id, slot, endpoint).op);
  await registry.txn({ compare: [], success: [...nodes.map((n) => n.op), ...app.ops, ...replicas] });
}

export async function startAllegraGateway(opts: {
  upstreams: string[];
  processes?: number;
  cpus?: string;
  accessLog?: boolean;
  /** The CLI to run (another build's dist/cli/main.js); default: this build's. */
  cli?: string;
  /** A gateway config file's content (`--config`), e.g. `{ edgeTokenFile }`. */
  config?: Record<string, unknown>;
}): Promise<AllegraTarget> {
  const cli = opts.cli ?? CLI;
  const dir = mkdtempSync(join(tmpdir(), 'allegra-bench-'));
  const registry = await EmbeddedHost.start(join(dir, 'registry'));
  await seedRegistry(registry, opts.upstreams);
  const args = [
    'gateway',
    '--registry',
    `embedded:${join(dir, 'registry')}`,
    '--http',
    '0',
    '--admin',
    '0',
    '--workers',
    String(opts.processes ?? 1),
    '--log',
    join(dir, 'gateway.log'),
    ...(opts.accessLog === false ? ['--no-access-log'] : []),
  ];
  if (opts.config) {
    writeFileSync(join(dir, 'gateway.json'), JSON.stringify(opts.config));
    args.push('--config', join(dir, 'gateway.json'));
  }
  // With a CPU list the gateway runs under taskset; fork keeps the IPC channel for the ready message.
  const child: ChildProcess = opts.cpus
    ? fork(cli, args, { execPath: 'taskset', execArgv: ['-c', opts.cpus, process.execPath], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    : fork(cli, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const ready = await new Promise<{ http: number; admin: number; workers?: number[] }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('allegra gateway did not start within 20 s')), 20_000);
    child.on('message', (msg: { type?: string; http: number; admin: number; workers?: number[] }) => {
      if (msg?.type !== 'ready') return;
      clearTimeout(timer);
      resolve(msg);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`allegra gateway exited with ${code} during start`));
    });
  });
  const pids = [child.pid as number, ...(ready.workers ?? [])];
  return {
    url: `http://127.0.0.1:${ready.http}`,
    host: HOST,
    pids,
    adminPort: ready.admin,
    registry,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const force = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(force);
      }
      await registry.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
