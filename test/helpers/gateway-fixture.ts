/**
 * A gateway under test, as in production: `allegra gateway` in its own process reading an embedded
 * registry that the test hosts and seeds, in front of real upstream processes.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { keys } from '../../protocol/keys.js';
import type { Op } from '../../protocol/registry.js';
import { generateKeyPair } from '../../protocol/signing.js';
import type { RoutePolicy } from '../../protocol/types.js';
import { EmbeddedHost } from '../../registry/embedded.js';
import { type SeededInstance, seedExpose, seedInstance, seedNode, seedReplica } from '../../registry/seed.js';
import { CLI } from './cli.js';
import { tempDir } from './tmp.js';

const UPSTREAM = fileURLToPath(new URL('../fixtures/upstream.mjs', import.meta.url));

export interface Upstream {
  name: string;
  port: number;
  url: string;
  child: ChildProcess;
  kill(signal?: NodeJS.Signals): void;
}

export const GRPC_UPSTREAM = fileURLToPath(new URL('../fixtures/grpc/server.mjs', import.meta.url));

export interface ProcessOptions {
  /**
   * Start the process in a session of its own (setsid), hence in a scheduling group of its own on kernels
   * with autogroups, so its priority can be raised on its own (test/helpers/scheduling.ts). It then no
   * longer shares the test's process group: it exits when its parent does.
   */
  ownSession?: boolean;
}

/** Starts a replica process (the HTTP fixture by default) that prints {"port":N} when listening. */
export function startUpstream(
  name: string,
  env: Record<string, string> = {},
  script = UPSTREAM,
  opts: ProcessOptions = {},
): Promise<Upstream> {
  const child = spawn(process.execPath, [script], {
    env: { ...process.env, ...env, NAME: name, ...(opts.ownSession ? { EXIT_WITH_PARENT: '1' } : {}) },
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: opts.ownSession === true,
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      const { port } = JSON.parse(out.slice(0, nl)) as { port: number };
      resolve({ name, port, url: `http://127.0.0.1:${port}`, child, kill: (signal = 'SIGKILL') => child.kill(signal) });
    });
    child.once('exit', (code) => reject(new Error(`upstream ${name} exited with ${code}`)));
  });
}

export interface GatewayProcess {
  http: string;
  https: string | null;
  admin: string;
  child: ChildProcess;
  logFile: string;
  stop(): Promise<void>;
}

export interface Cluster {
  registry: EmbeddedHost;
  dir: string;
  /** Puts an instance `name` with one route `<name>.test` whose replicas are `upstreams`. */
  addApp(name: string, upstreams: Upstream[], policy?: RoutePolicy): Promise<{ instanceId: string; host: string }>;
  setReplicas(name: string, upstreams: Upstream[]): Promise<void>;
  /** Exposes an app as its owner would (`allegra expose`): its route gets TLS, and gateways order its certificate. */
  expose(name: string, body: { redirectHttp: boolean }): Promise<void>;
  startGateway(args?: string[], config?: Record<string, unknown>, opts?: ProcessOptions): Promise<GatewayProcess>;
  cleanup(): Promise<void>;
}

export async function startCluster(): Promise<Cluster> {
  const tmp = tempDir('allegra-gw-');
  const registryDir = join(tmp.path, 'registry');
  const registry = await EmbeddedHost.start(registryDir);
  const gateways: GatewayProcess[] = [];
  const apps = new Map<string, string>();
  const seededApps = new Map<string, SeededInstance>();
  // Records as agents would write them: an owner's signed create request, a node whose key signs its replicas.
  const owner = generateKeyPair();
  const node = seedNode('n-test');
  await registry.put(keys.network(), JSON.stringify({ baseDomain: 'test', quorumSize: 1 }));
  await registry.txn({ compare: [], success: [node.op] });
  await registry.put(keys.quorum('q-test'), JSON.stringify({ id: 'q-test', members: ['n-test'], capacity: 16 }));

  const setReplicas = async (name: string, upstreams: Upstream[]) => {
    const instanceId = apps.get(name) as string;
    // One transaction, like an agent's updates: replicas that stay are never seen to vanish.
    const puts: Op[] = upstreams.map((u, slot) => seedReplica(node, instanceId, slot, u.url, { pid: u.child.pid ?? null }).op);
    const keep = new Set(puts.map((p) => (p as { key: string }).key));
    const { items } = await registry.list(keys.replicasOf(instanceId));
    const deletes: Op[] = items.filter((kv) => !keep.has(kv.key)).map((kv) => ({ type: 'delete', key: kv.key }));
    await registry.txn({ compare: [], success: [...deletes, ...puts] });
  };

  return {
    registry,
    dir: tmp.path,
    async addApp(name, upstreams, policy) {
      const seeded = seedInstance(owner, name, 'test', {
        cmd: 'fixture',
        replicas: { min: upstreams.length, max: upstreams.length },
        ...(policy ? { policy } : {}),
      });
      apps.set(name, seeded.spec.id);
      seededApps.set(name, seeded);
      await registry.txn({ compare: [], success: seeded.ops });
      await setReplicas(name, upstreams);
      return { instanceId: seeded.spec.id, host: seeded.route.host };
    },
    setReplicas,
    async expose(name, body) {
      const seeded = seededApps.get(name);
      if (!seeded) throw new Error(`no app ${name}`);
      await registry.txn({ compare: [], success: [seedExpose(owner, seeded, body).op] });
    },
    async startGateway(args = [], config, opts = {}) {
      const n = gateways.length;
      const logFile = join(tmp.path, `gateway-${n}.log`);
      const extra = [...args];
      if (config) {
        const file = join(tmp.path, `gateway-${n}.json`);
        writeFileSync(file, JSON.stringify(config));
        extra.push('--config', file);
      }
      const child = fork(
        CLI,
        ['gateway', '--registry', `embedded:${registryDir}`, '--http', '0', '--https', '0', '--admin', '0', '--log', logFile, ...extra],
        // A gateway leaves when its IPC channel closes, so one in a session of its own still dies with the test.
        { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], detached: opts.ownSession === true },
      );
      const ready = await new Promise<{ http: number; https: number | null; admin: number }>((resolve, reject) => {
        child.on('message', (m: { type?: string; http: number; https: number | null; admin: number }) => m?.type === 'ready' && resolve(m));
        child.once('exit', (code) => reject(new Error(`gateway exited with ${code} during start`)));
      });
      const gw: GatewayProcess = {
        http: `http://127.0.0.1:${ready.http}`,
        https: ready.https ? `https://127.0.0.1:${ready.https}` : null,
        admin: `http://127.0.0.1:${ready.admin}`,
        child,
        logFile,
        stop: async () => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGTERM');
          const force = setTimeout(() => child.kill('SIGKILL'), 15_000);
          await exited;
          clearTimeout(force);
        },
      };
      gateways.push(gw);
      return gw;
    },
    async cleanup() {
      await Promise.all(gateways.map((g) => g.stop()));
      await registry.close();
      tmp.cleanup();
    },
  };
}

/** Stops upstream processes started by a test. */
export function stopUpstreams(upstreams: Upstream[]): void {
  for (const u of upstreams) if (u.child.exitCode === null) u.kill('SIGKILL');
}
