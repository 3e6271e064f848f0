/**
 * A devnet daemon that is kept running: when it dies (a crash, or a developer trying out failures with
 * `kill -9`), it is started again with exponential backoff and on the same ports and data directory, so the
 * node comes back as itself and its quorum heals. Every death and return is reported on stderr.
 */
import { type Daemon, type ReadyMessage, startDaemon, stopDaemon } from './children.js';

export interface SuperviseOptions {
  /** Arguments for a restart, given what the first start reported (ports chosen by the kernel stay the same). */
  restartArgs: (ready: ReadyMessage) => string[];
  env?: Record<string, string>;
  report: (line: string) => void;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Uptime after which the backoff starts over. */
  resetAfterMs?: number;
}

export class SupervisedDaemon {
  private current: Daemon | null = null;
  private stopping = false;
  private backoffMs: number;
  private timer: NodeJS.Timeout | null = null;
  private startedAt = 0;
  restarts = 0;

  constructor(
    readonly name: string,
    private readonly args: string[],
    private readonly opts: SuperviseOptions,
  ) {
    this.backoffMs = opts.minBackoffMs ?? 200;
  }

  /** Starts the daemon; rejects if this first start fails (nothing is retried before the network is up). */
  async start(): Promise<this> {
    this.adopt(await startDaemon(this.name, this.args, undefined, undefined, this.opts.env));
    return this;
  }

  get daemon(): Daemon {
    if (!this.current) throw new Error(`${this.name} is not running`);
    return this.current;
  }

  get ready(): ReadyMessage {
    return this.daemon.ready;
  }

  get pid(): number | undefined {
    return this.current?.child.pid;
  }

  private adopt(d: Daemon): void {
    this.current = d;
    this.startedAt = Date.now();
    d.child.once('exit', (code, signal) => {
      if (this.stopping || this.current !== d) return;
      if (Date.now() - this.startedAt > (this.opts.resetAfterMs ?? 30_000)) this.backoffMs = this.opts.minBackoffMs ?? 200;
      const delay = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, this.opts.maxBackoffMs ?? 10_000);
      this.opts.report(`${this.name} exited (${signal ?? `code ${code}`}); restarting in ${(delay / 1000).toFixed(1)} s`);
      this.timer = setTimeout(() => void this.restart(d.ready), delay);
    });
  }

  private async restart(ready: ReadyMessage): Promise<void> {
    this.timer = null;
    if (this.stopping) return;
    try {
      const d = await startDaemon(this.name, this.opts.restartArgs(ready), undefined, undefined, this.opts.env);
      if (this.stopping) {
        await stopDaemon(d);
        return;
      }
      this.restarts++;
      this.adopt(d);
      this.opts.report(`${this.name} is back (pid ${d.child.pid})`);
    } catch (err) {
      const delay = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, this.opts.maxBackoffMs ?? 10_000);
      this.opts.report(`${this.name} could not restart (${(err as Error).message}); trying again in ${(delay / 1000).toFixed(1)} s`);
      this.timer = setTimeout(() => void this.restart(ready), delay);
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.current) await stopDaemon(this.current);
  }
}

/** Replaces the value after `flag` in an argument list (or appends it). */
export function withArg(args: string[], flag: string, value: string): string[] {
  const i = args.indexOf(flag);
  if (i < 0) return [...args, flag, value];
  const copy = [...args];
  copy[i + 1] = value;
  return copy;
}
