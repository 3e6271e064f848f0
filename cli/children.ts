/**
 * Child daemons of `allegra devnet`: spawned with an IPC channel, considered up when they send their
 * `ready` message, stopped with SIGTERM then SIGKILL. Each child exits by itself if the IPC channel
 * closes, so even a SIGKILLed devnet leaves nothing behind.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface ReadyMessage {
  type: 'ready';
  role: string;
  [key: string]: unknown;
}

export interface Daemon {
  name: string;
  child: ChildProcess;
  ready: ReadyMessage;
}

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

/**
 * Starts `allegra <args>` (the built CLI next to this module unless `main` names another entry); `env` is
 * added to this process's environment (e.g. the registry credential of the child's role).
 */
export function startDaemon(
  name: string,
  args: string[],
  timeoutMs = 30_000,
  main = MAIN,
  env: Record<string, string> = {},
): Promise<Daemon> {
  const child = fork(main, args, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env: { ...process.env, ...env, ALLEGRA_DAEMON: name } });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2_000);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} did not become ready within ${timeoutMs / 1000}s`));
    }, timeoutMs);
    child.on('message', (msg: ReadyMessage) => {
      if (msg?.type !== 'ready') return;
      clearTimeout(timer);
      resolve({ name, child, ready: msg });
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const why = stderr.trim().split('\n').pop() ?? '';
      reject(new Error(`${name} exited during start (${signal ?? `code ${code}`})${why ? `: ${why}` : ''}`));
    });
  });
}

export async function stopDaemon(d: Daemon, graceMs = 10_000): Promise<void> {
  const { child } = d;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
