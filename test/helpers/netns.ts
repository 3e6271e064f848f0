/**
 * Many machines on one: a lab of Linux network namespaces that a test creates for itself. Each "machine"
 * is a namespace with loopback and one interface `eth0` (10.213.0.x/24) cabled by a veth pair to a bridge
 * that lives in a namespace of its own (the switch), so the host's own namespace never gets an address in
 * the lab's range and no lab traffic can leave the lab. Faults are real: a link set down, netem delay and
 * loss, a machine isolated from some peers (a partition).
 *
 * Processes run inside a machine with `nsenter --net` (which execs the command: the PID is the program's). Not
 * `ip netns exec`: it also remounts /sys for the namespace, which hides the cgroup hierarchies the agents'
 * replica sandboxes need; a simulated machine shares the host's filesystem, only its network is its own.
 * `cleanup()` kills every process it started (by PID), then deletes the namespaces, also after a failure;
 * a run that was itself SIGKILLed is swept by the next run (namespace names carry the creator's PID).
 */
import { type ChildProcess, execFileSync, type SpawnOptions, spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const WAN_BRIDGE = fileURLToPath(new URL('./wan-bridge.py', import.meta.url));

export const LAB_SUBNET = '10.213.0';
const PREFIX = 'allegra-lab-';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Deletes the namespaces of earlier runs whose creator no longer exists (and their processes). */
function sweepStale(): void {
  let list = '';
  try {
    list = ip('netns', 'list');
  } catch {
    return;
  }
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(name);
    if (!m || alive(Number(m[1]))) continue;
    killNamespaceProcesses(name);
    spawnSync('ip', ['netns', 'delete', name]);
  }
}

function killNamespaceProcesses(ns: string): void {
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Whether this host lets a test create network namespaces (root, iproute2, netns support). */
export function canCreateNamespaces(): { ok: true } | { ok: false; reason: string } {
  const probe = `${PREFIX}${process.pid}-probe`;
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (r.error) return { ok: false, reason: `cannot run ip (iproute2): ${r.error.message}` };
  if (r.status !== 0) return { ok: false, reason: `cannot create a network namespace: ${r.stderr.trim() || `ip exited ${r.status}`}` };
  spawnSync('ip', ['netns', 'delete', probe]);
  return { ok: true };
}

export interface Machine {
  name: string;
  ns: string;
  /** The machine's address in the lab. */
  address: string;
  /** Interface name of its cable on the switch. */
  port: string;
  /** The userspace bridge that impairs its traffic, for `impairable` machines. */
  wan?: { ns: string; process: ChildProcess; send(settings: object): Promise<void> };
}

function hasNetem(): boolean {
  const probe = `${PREFIX}${process.pid}-netem`;
  spawnSync('ip', ['netns', 'add', probe]);
  const r = spawnSync('tc', ['-n', probe, 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms']);
  spawnSync('ip', ['netns', 'delete', probe]);
  return r.status === 0;
}

export class Lab {
  readonly machines = new Map<string, Machine>();
  private readonly switchNs: string;
  private readonly children = new Set<ChildProcess>();
  private next = 10;
  private closed = false;

  private constructor(readonly id: string) {
    this.switchNs = `${PREFIX}${id}-sw`;
  }

  /** Creates the switch; machines are added with `addMachine`. */
  static create(): Lab {
    sweepStale();
    const lab = new Lab(`${process.pid}-${Math.random().toString(36).slice(2, 6)}`);
    try {
      ip('netns', 'add', lab.switchNs);
      ip('-n', lab.switchNs, 'link', 'set', 'lo', 'up');
      ip('-n', lab.switchNs, 'link', 'add', 'br0', 'type', 'bridge');
      ip('-n', lab.switchNs, 'link', 'set', 'br0', 'up');
    } catch (err) {
      lab.deleteNamespaces();
      throw err;
    }
    return lab;
  }

  /** Adds a machine; `impairable` cables it through a bridge that can add delay and loss (see `netem`). */
  async addMachine(name: string, opts: { impairable?: boolean } = {}): Promise<Machine> {
    if (this.machines.has(name)) throw new Error(`machine ${name} exists`);
    const host = this.next++;
    const machine: Machine = { name, ns: `${PREFIX}${this.id}-${name}`, address: `${LAB_SUBNET}.${host}`, port: `p${host}` };
    ip('netns', 'add', machine.ns);
    this.machines.set(name, machine);
    ip('-n', machine.ns, 'link', 'set', 'lo', 'up');
    // Both ends are created directly inside their namespaces: the host namespace never sees them.
    if (opts.impairable && !(this.netemAvailable ??= hasNetem())) {
      const wanNs = `${machine.ns}-w`;
      ip('netns', 'add', wanNs);
      ip('link', 'add', 'ia', 'netns', wanNs, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', machine.ns);
      ip('link', 'add', machine.port, 'netns', this.switchNs, 'type', 'veth', 'peer', 'name', 'ib', 'netns', wanNs);
      for (const dev of ['ia', 'ib']) {
        ip('-n', wanNs, 'link', 'set', dev, 'up');
        // Frames arrive as large and with as unfinished checksums as offloads leave them; make them wire-ready
        // (segmented, checksummed) so that forwarding them from userspace delivers them intact.
        spawnSync('ip', ['netns', 'exec', wanNs, 'ethtool', '-K', dev, 'gro', 'off', 'gso', 'off', 'tso', 'off', 'tx', 'off'], {
          stdio: 'ignore',
        });
      }
      spawnSync('ip', ['netns', 'exec', machine.ns, 'ethtool', '-K', 'eth0', 'gso', 'off', 'tso', 'off', 'gro', 'off', 'tx', 'off'], {
        stdio: 'ignore',
      });
      machine.wan = await this.startWanBridge(wanNs);
    } else {
      ip('link', 'add', machine.port, 'netns', this.switchNs, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', machine.ns);
    }
    ip('-n', this.switchNs, 'link', 'set', machine.port, 'master', 'br0', 'up');
    // Checksums left to the "hardware" are never filled in when an impaired machine's bridge forwards a frame
    // from userspace: every machine computes its own (cheap at lab speeds).
    execFileSync('ip', ['netns', 'exec', machine.ns, 'ethtool', '-K', 'eth0', 'tx', 'off'], { stdio: 'ignore' });
    ip('-n', machine.ns, 'addr', 'add', `${machine.address}/24`, 'dev', 'eth0');
    ip('-n', machine.ns, 'link', 'set', 'eth0', 'up');
    return machine;
  }

  private netemAvailable: boolean | undefined;

  private async startWanBridge(ns: string): Promise<NonNullable<Machine['wan']>> {
    const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', 'python3', WAN_BRIDGE, 'ia', 'ib'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const waiters: Array<() => void> = [];
    let ready: () => void = () => {};
    const started = new Promise<void>((r) => {
      ready = r;
    });
    lines.on('line', (line) => (line === 'ready' ? ready() : waiters.shift()?.()));
    await Promise.race([
      started,
      new Promise((_, reject) => child.once('exit', (code) => reject(new Error(`wan bridge exited with ${code}`)))),
    ]);
    return {
      ns,
      process: child,
      send: (settings) =>
        new Promise<void>((resolve) => {
          waiters.push(resolve);
          child.stdin?.write(`${JSON.stringify(settings)}\n`);
        }),
    };
  }

  machine(name: string): Machine {
    const m = this.machines.get(name);
    if (!m) throw new Error(`no machine ${name}`);
    return m;
  }

  /** Pulls the machine's cable: nothing in or out until `restore`. */
  cut(name: string): void {
    ip('-n', this.switchNs, 'link', 'set', this.machine(name).port, 'down');
  }

  restore(name: string): void {
    ip('-n', this.switchNs, 'link', 'set', this.machine(name).port, 'up');
  }

  /**
   * Delay and loss on the machine's traffic: netem on its eth0, or its wan bridge (both directions, each
   * frame delayed once); `null` clears it.
   */
  async netem(name: string, impairment: { delayMs?: number; jitterMs?: number; lossPct?: number } | null): Promise<void> {
    const m = this.machine(name);
    if (m.wan) return m.wan.send(impairment ?? {});
    if (this.netemAvailable === false) throw new Error(`machine ${name} was not created impairable and this kernel has no netem`);
    spawnSync('tc', ['-n', m.ns, 'qdisc', 'del', 'dev', 'eth0', 'root']);
    if (!impairment) return;
    const args = ['-n', m.ns, 'qdisc', 'add', 'dev', 'eth0', 'root', 'netem'];
    if (impairment.delayMs) args.push('delay', `${impairment.delayMs}ms`, ...(impairment.jitterMs ? [`${impairment.jitterMs}ms`] : []));
    if (impairment.lossPct) args.push('loss', `${impairment.lossPct}%`);
    execFileSync('tc', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  /** Starts a program on a machine; killed by `cleanup`. */
  spawn(name: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    if (this.closed) throw new Error('lab is closed');
    const child = spawn('nsenter', [`--net=/run/netns/${this.machine(name).ns}`, '--', ...argv], opts);
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Runs a program on a machine to completion. */
  run(name: string, argv: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}) {
    const r = spawnSync('nsenter', [`--net=/run/netns/${this.machine(name).ns}`, '--', ...argv], {
      encoding: 'utf8',
      env: opts.env ?? process.env,
      timeout: opts.timeoutMs ?? 60_000,
      input: opts.input,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** Kills every process this lab started, then removes every namespace it created. Safe to call twice. */
  async cleanup(): Promise<void> {
    this.closed = true;
    const exits = [...this.children].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
          setTimeout(resolve, 5_000).unref();
        }),
    );
    await Promise.all(exits);
    this.deleteNamespaces();
  }

  private deleteNamespaces(): void {
    for (const m of this.machines.values()) {
      // Processes started inside without going through `spawn` (daemons' children) go too.
      for (const ns of [m.ns, ...(m.wan ? [m.wan.ns] : [])]) {
        killNamespaceProcesses(ns);
        spawnSync('ip', ['netns', 'delete', ns]);
      }
    }
    killNamespaceProcesses(this.switchNs);
    spawnSync('ip', ['netns', 'delete', this.switchNs]);
  }

  /** Names of the namespaces that currently exist for this lab (for tests of the harness itself). */
  existing(): string[] {
    const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    return list
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n.startsWith(`${PREFIX}${this.id}-`));
  }
}
