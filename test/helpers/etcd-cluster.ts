/**
 * Starts a real etcd cluster (1 or 3 members) on loopback for tests, with helpers to SIGKILL and restart
 * single members. Every process it starts is killed by PID in `stop()` (and, as a last resort, when the
 * test process exits), and its temp data dirs are removed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Role } from '../../protocol/roles.js';
import { freePorts } from '../../quorum-agent/ports.js';
import { setupEtcdAuth } from '../../registry/etcd-auth.js';

export const ETCD_BINARY = '/usr/bin/etcd';

export interface EtcdCluster {
  /** Client endpoints, `127.0.0.1:PORT`, one per member (index = member number). */
  endpoints: string[];
  /** With `auth: true`: the credentials file of each role, as `allegra registry setup-auth` writes them. */
  credentials: Record<Role, string> | null;
  /** SIGKILLs member `i` and waits until its process is gone. */
  kill(i: number): Promise<void>;
  /** Starts member `i` again on its old data dir and waits until it serves requests. */
  restart(i: number): Promise<void>;
  /** Kills every member this helper started and removes the data dirs. */
  stop(): Promise<void>;
}

interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
  proc: ChildProcess | null;
  /** Last lines of output, for error messages when the member does not come up. */
  log: string[];
}

/** Every etcd process started by this module, so a crashed test run does not leak them. */
const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of running) p.kill('SIGKILL');
  });
}

export async function startEtcdCluster(opts: { members: 1 | 3; auth?: boolean }): Promise<EtcdCluster> {
  if (!existsSync(ETCD_BINARY)) {
    // No skipping: a missing etcd must fail loudly, in CI and locally alike.
    const hint = process.env.CI === 'true' ? '' : ' (or: sudo apt-get install -y etcd-server)';
    throw new Error(`etcd not installed: run node scripts/install-deps.mjs${hint}`);
  }
  installExitHook();
  // tmpfs makes etcd's fsyncs free, which keeps the tests fast; fall back to the normal temp dir.
  const base = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'allegra-etcd-'));
  const ports = await freePorts(2 * opts.members);
  const members: Member[] = [];
  for (let i = 0; i < opts.members; i++) {
    members.push({
      name: `m${i}`,
      clientPort: ports[2 * i]!,
      peerPort: ports[2 * i + 1]!,
      dataDir: join(base, `m${i}`),
      proc: null,
      log: [],
    });
  }
  const initialCluster = members.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(',');
  const token = `allegra-test-${process.pid}-${Date.now()}`;

  const launch = (m: Member): void => {
    const args = [
      `--name=${m.name}`,
      `--data-dir=${m.dataDir}`,
      `--listen-client-urls=http://127.0.0.1:${m.clientPort}`,
      `--advertise-client-urls=http://127.0.0.1:${m.clientPort}`,
      `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-cluster=${initialCluster}`,
      `--initial-cluster-token=${token}`,
      '--initial-cluster-state=new', // ignored once the data dir exists (restart)
      // An election timeout under 667 ms makes etcd's minimum lease TTL 1 s (it is 1.5 × election
      // timeout, rounded up), so lease tests need not wait for the default 2 s minimum.
      '--heartbeat-interval=100',
      '--election-timeout=600',
      '--logger=zap',
      '--log-outputs=stderr',
      '--log-level=warn',
    ];
    const proc = spawn(ETCD_BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk: Buffer) => {
      m.log.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      if (m.log.length > 40) m.log.splice(0, m.log.length - 40);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    proc.on('exit', () => running.delete(proc));
    running.add(proc);
    m.proc = proc;
  };

  const killMember = async (m: Member): Promise<void> => {
    const proc = m.proc;
    m.proc = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill('SIGKILL');
    await exited;
  };

  const stop = async (): Promise<void> => {
    await Promise.all(members.map(killMember));
    rmSync(base, { recursive: true, force: true });
  };

  let credentials: Record<Role, string> | null = null;
  try {
    for (const m of members) launch(m);
    await Promise.all(members.map((m) => waitHealthy(m)));
    if (opts.auth) {
      const { files } = await setupEtcdAuth(
        members.map((m) => `127.0.0.1:${m.clientPort}`),
        join(base, 'credentials'),
      );
      credentials = { admin: files.admin, agent: files.agent, gateway: files.gateway };
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const member = (i: number): Member => {
    const m = members[i];
    if (!m) throw new Error(`no etcd member ${i} (cluster has ${members.length})`);
    return m;
  };
  return {
    endpoints: members.map((m) => `127.0.0.1:${m.clientPort}`),
    credentials,
    kill: (i) => killMember(member(i)),
    restart: async (i) => {
      const m = member(i);
      if (m.proc) throw new Error(`etcd member ${i} is still running`);
      launch(m);
      await waitHealthy(m);
    },
    stop,
  };
}

/**
 * Waits until the member answers `/health` with true: it has a leader and can serve a quorum read,
 * which is what a registry client needs.
 */
async function waitHealthy(m: Member, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const proc = m.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`etcd member ${m.name} exited while starting:\n${m.log.join('\n')}`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${m.clientPort}/health`, { signal: AbortSignal.timeout(1_000) });
      const body = (await res.json()) as { health?: string };
      if (body.health === 'true') return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`etcd member ${m.name} not healthy after ${timeoutMs} ms:\n${m.log.join('\n')}`);
}
