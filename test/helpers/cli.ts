/** Runs the built `allegra` CLI as a real child process, the way users and scripts do. */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      // A child ended by a signal (the timeout's, or a crash) says so, rather than failing with an empty stderr.
      const ended = err?.signal ? `${stderr}(ended by ${err.signal}${err.killed ? ` after the ${timeoutMs} ms timeout` : ''})` : stderr;
      resolve({ code, stdout, stderr: ended });
    });
  });
}

/** Runs a CLI command with --json and parses its single JSON document; throws with stderr on failure. */
export async function cliJson<T>(args: string[], env: Record<string, string>): Promise<T> {
  const r = await runCli([...args, '--json'], env);
  if (r.code !== 0) throw new Error(`allegra ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}

export interface DevnetInfo {
  http: string;
  https: string | null;
  rpc: string;
  admin: string;
  agents: Array<{ node: string; rpc: string; pid: number }>;
  gateway: { pid: number };
  instances: Array<{ name: string; url: string }>;
}

/** Every port of a devnet chosen by the system, so suites running at once never collide. */
export const DEVNET_FREE_PORTS = ['--http', '0', '--https', '0', '--rpc', '0', '--admin', '0'];

/** Starts `allegra devnet --json` on free ports and resolves once it printed its ready line. */
/**
 * Ends a devnet the way a user does (SIGINT: it stops every process it started) and waits for it; SIGKILL
 * after `graceMs` if it has not exited, so a stuck shutdown never outlives the suite.
 */
export async function stopDevnet(devnet: { child: ChildProcess } | undefined, graceMs = 15_000): Promise<void> {
  if (!devnet || devnet.child.exitCode !== null || devnet.child.signalCode !== null) return;
  const exited = new Promise((r) => devnet.child.once('exit', r));
  devnet.child.kill('SIGINT');
  const timer = setTimeout(() => devnet.child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export function startDevnet(
  args: string[],
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<{ child: ChildProcess; info: DevnetInfo; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'devnet', '--json', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGINT');
      reject(new Error(`devnet not ready within ${timeoutMs} ms: ${stderr}`));
    }, timeoutMs);
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      const nl = stdout.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        try {
          resolve({ child, info: JSON.parse(stdout.slice(0, nl)) as DevnetInfo, stderr: () => stderr });
        } catch (err) {
          reject(err);
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`devnet exited with ${code} before it was ready: ${stderr}`));
    });
  });
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Alive and not a zombie: an exited process its parent has not reaped yet holds nothing and runs nothing. */
export function isRunning(pid: number): boolean {
  if (!isAlive(pid)) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
