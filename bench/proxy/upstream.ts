/** The upstream replicas: N separate processes of upstream-server.js on loopback. */
import { fileURLToPath } from 'node:url';
import { getFreePort, killHard, type Proc, spawnProc, stopProc, waitForLine } from '../lib/proc.js';

const SERVER = fileURLToPath(new URL('./upstream-server.js', import.meta.url));

interface Replica {
  index: number;
  port: number;
  proc: Proc;
}

export class Upstreams {
  private readonly replicas: Replica[] = [];

  private constructor(private readonly cpus: string | undefined) {}

  static async start(count: number, cpus: string | undefined): Promise<Upstreams> {
    const ups = new Upstreams(cpus);
    try {
      for (let i = 0; i < count; i++) ups.replicas.push(await ups.spawn(i, await getFreePort()));
    } catch (err) {
      await ups.stop();
      throw err;
    }
    return ups;
  }

  get urls(): string[] {
    return this.replicas.map((r) => `http://127.0.0.1:${r.port}`);
  }

  get pids(): number[] {
    return this.replicas.map((r) => r.proc.pid);
  }

  /** SIGKILL one replica (its listening socket and connections die with it). Returns the kill time. */
  kill(index: number): number {
    const r = this.replica(index);
    const at = performance.timeOrigin + performance.now();
    killHard(r.proc);
    return at;
  }

  /** Restarts every replica that is not running, on its old port. */
  async heal(): Promise<void> {
    for (const r of this.replicas) {
      if (!r.proc.exited()) continue;
      await r.proc.exit;
      const fresh = await this.spawn(r.index, r.port);
      r.proc = fresh.proc;
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.replicas.map((r) => stopProc(r.proc)));
  }

  private replica(index: number): Replica {
    const r = this.replicas[index];
    if (!r) throw new Error(`no replica ${index}`);
    return r;
  }

  private async spawn(index: number, port: number): Promise<Replica> {
    const proc = spawnProc({
      name: `upstream replica ${index}`,
      cmd: process.execPath,
      args: [SERVER, '--port', String(port), '--index', String(index)],
      cpus: this.cpus,
    });
    await waitForLine(proc, 'READY', 10_000);
    return { index, port, proc };
  }
}
