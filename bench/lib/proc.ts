/**
 * Child-process bookkeeping for the benchmark harness: every process the harness starts is spawned
 * through here (optionally pinned with `taskset`), in its own process group, and registered so that
 * it can be stopped by PID/PGID on normal completion, on Ctrl-C and on crashes.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

export interface Proc {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves when the process itself has exited. */
  readonly exit: Promise<ExitInfo>;
  /** Resolves when the process has exited and its stdio is closed (all output read). */
  readonly closed: Promise<ExitInfo>;
  exited(): boolean;
  /** Full stdout when `captureStdout`, otherwise the last few KiB of stdout+stderr. */
  stdout(): string;
  /** Last few KiB of stdout + stderr, for error messages. */
  tail(): string;
}

export interface SpawnOptions {
  name: string;
  cmd: string;
  args: string[];
  /** taskset CPU list; ignored when pinning is unavailable. */
  cpus?: string | undefined;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  captureStdout?: boolean;
}

const TAIL_BYTES = 8192;
const live = new Set<Proc>();
const tempDirs = new Set<string>();
let tasksetUsable: boolean | undefined;

/** Locates an executable on PATH plus the sbin directories (nginx/haproxy live in /usr/sbin). */
export function findBinary(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** True when `taskset` exists and may set the affinity of a child on this machine. */
export function canPin(): boolean {
  if (tasksetUsable === undefined) {
    const taskset = findBinary('taskset');
    tasksetUsable = taskset !== undefined && spawnSync(taskset, ['-c', '0', 'true']).status === 0;
  }
  return tasksetUsable;
}

let shuttingDown = false;

/** Throws once Ctrl-C (or SIGTERM/SIGHUP) has been received: nothing new may start after that. */
export function checkInterrupted(): void {
  if (shuttingDown) throw new Error('interrupted');
}

export function interrupted(): boolean {
  return shuttingDown;
}

export function spawnProc(opts: SpawnOptions): Proc {
  checkInterrupted();
  let cmd = opts.cmd;
  let args = opts.args;
  if (opts.cpus !== undefined && canPin()) {
    // taskset exec()s the command, so the PID we get is the command's PID.
    args = ['-c', opts.cpus, cmd, ...args];
    cmd = findBinary('taskset') ?? 'taskset';
  }
  const child = spawn(cmd, args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // own process group: stop() signals the whole group (e.g. nginx workers)
  });
  let out = '';
  let tail = '';
  const keepTail = (chunk: string): void => {
    tail = (tail + chunk).slice(-TAIL_BYTES);
  };
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    if (opts.captureStdout) out += chunk;
    keepTail(chunk);
  });
  child.stderr?.on('data', keepTail);
  let hasExited = false;
  const exit = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      hasExited = true;
      resolve({ code, signal });
    });
    child.once('error', (error) => {
      hasExited = true;
      resolve({ code: null, signal: null, error });
    });
  });
  const closed = new Promise<ExitInfo>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
  });
  const proc: Proc = {
    name: opts.name,
    pid: child.pid ?? -1,
    child,
    exit,
    closed,
    exited: () => hasExited,
    stdout: () => (opts.captureStdout ? out : tail),
    tail: () => tail,
  };
  if (child.pid !== undefined) live.add(proc);
  void exit.then(() => {
    // The leader is gone; make sure nothing of its group survives it.
    signalGroup(proc.pid, 'SIGKILL');
    live.delete(proc);
  });
  return proc;
}

function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    try {
      process.kill(pid, signal);
      return true;
    } catch {
      return false;
    }
  }
}

function timeout(ms: number): Promise<'timeout'> {
  return new Promise((resolve) => setTimeout(() => resolve('timeout'), ms).unref());
}

/** SIGTERM the process group, then SIGKILL it if it has not exited within `graceMs`. */
export async function stopProc(proc: Proc, graceMs = 3000): Promise<void> {
  if (!proc.exited()) {
    signalGroup(proc.pid, 'SIGTERM');
    if ((await Promise.race([proc.exit, timeout(graceMs)])) === 'timeout') {
      signalGroup(proc.pid, 'SIGKILL');
      await Promise.race([proc.exit, timeout(graceMs)]);
    }
  }
  signalGroup(proc.pid, 'SIGKILL');
  live.delete(proc);
}

/** SIGKILL exactly this process (not its group): used to simulate a crashed replica. */
export function killHard(proc: Proc): void {
  try {
    process.kill(proc.pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => stopProc(p, 1500)));
}

/** Synchronous last resort, for process 'exit'. */
export function killAllSync(): void {
  for (const proc of live) signalGroup(proc.pid, 'SIGKILL');
  live.clear();
}

const foreign = new Set<number>();
const cleanups = new Set<() => Promise<void>>();

/** Registers an async stop function (e.g. a target started by someone else's module) for Ctrl-C. */
export function registerCleanup(fn: () => Promise<void>): () => void {
  cleanups.add(fn);
  return () => {
    cleanups.delete(fn);
  };
}

/** Registers PIDs started by someone else (e.g. the gateway module) for the emergency kill only. */
export function registerForeignPids(pids: number[]): () => void {
  for (const pid of pids) foreign.add(pid);
  return () => {
    for (const pid of pids) foreign.delete(pid);
  };
}

export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const dir of tempDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
  tempDirs.clear();
}

let handlersInstalled = false;

/**
 * Ctrl-C / SIGTERM / SIGHUP: stop every child, remove temp dirs, exit 130.
 * On any exit: SIGKILL whatever is still registered (synchronously).
 */
export function installCleanupHandlers(log: (msg: string) => void): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (shuttingDown) {
      killAllSync();
      killForeignSync();
      process.exit(130);
    }
    shuttingDown = true;
    log(`\n${signal}: stopping benchmark processes and removing temp dirs…`);
    const foreignStops = Promise.allSettled([...cleanups].map((fn) => fn()));
    void Promise.race([foreignStops, timeout(5000)])
      .then(() => stopAll())
      .catch(() => undefined)
      .finally(() => {
        killForeignSync();
        removeTempDirs();
        process.exit(130);
      });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  process.on('exit', () => {
    killAllSync();
    killForeignSync();
    removeTempDirs();
  });
}

function killForeignSync(): void {
  for (const pid of foreign) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  foreign.clear();
}

export function getFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface SimpleResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  bodyBytes: number;
}

/** One request on a fresh connection; used for readiness checks and validation only. */
export function httpOnce(
  url: string,
  opts: { host?: string; method?: string; body?: Buffer; timeoutMs?: number } = {},
): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = {};
    if (opts.host) headers.host = opts.host;
    if (opts.body) {
      headers['content-type'] = 'application/octet-stream';
      headers['content-length'] = opts.body.length;
    }
    const req = http.request(url, { method: opts.method ?? 'GET', headers, agent: false }, (res) => {
      let bodyBytes = 0;
      res.on('data', (chunk: Buffer) => {
        bodyBytes += chunk.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bodyBytes }));
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 2000, () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Polls `url` until it answers 200, the process dies, or the deadline passes. */
export async function waitForHttp(url: string, host: string, timeoutMs: number, proc?: Proc): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (proc?.exited()) throw new Error(`${proc.name} exited before it was ready:\n${proc.tail()}`);
    try {
      const res = await httpOnce(url, { host, timeoutMs: 1000 });
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(50);
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms (${last})${proc ? `:\n${proc.tail()}` : ''}`);
}

/** Waits until the process prints a line starting with `marker` on stdout. */
export function waitForLine(proc: Proc, marker: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => done(new Error(`${proc.name}: no "${marker}" after ${timeoutMs} ms\n${proc.tail()}`)), timeoutMs);
    const onData = (chunk: string): void => {
      buf += chunk;
      const line = buf.split('\n').find((l) => l.startsWith(marker));
      if (line !== undefined) done(undefined, line);
    };
    const done = (err?: Error, line?: string): void => {
      clearTimeout(timer);
      proc.child.stdout?.off('data', onData);
      if (err) reject(err);
      else resolve(line ?? '');
    };
    proc.child.stdout?.on('data', onData);
    void proc.exit.then((info) =>
      done(new Error(`${proc.name} exited (${info.error?.message ?? info.code ?? info.signal}) before "${marker}":\n${proc.tail()}`)),
    );
  });
}

/** One-line form of an error (message plus process output), for tables and logs. */
export function oneLine(err: unknown, max = 240): string {
  const text = (err instanceof Error ? err.message : String(err))
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' / ');
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
