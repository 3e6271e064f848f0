/** An ExecSession over a child process started in its own process group (drivers' `exec`). */
import type { ChildProcess } from 'node:child_process';
import type { ExecSession, ExitInfo } from './driver.js';

export function execSession(child: ChildProcess): ExecSession {
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: 127, signal: null }));
  });
  let done = false;
  void exited.then(() => {
    done = true;
  });
  const { stdin, stdout, stderr } = child;
  if (!stdin || !stdout || !stderr) throw new Error('exec needs piped stdio');
  // A client that goes away mid-write must not crash the agent.
  stdin.on('error', () => {});
  return {
    stdin,
    stdout,
    stderr,
    pid: child.pid ?? null,
    exited,
    kill: (signal = 'SIGKILL') => {
      if (done || child.pid === undefined) return;
      try {
        process.kill(-child.pid, signal);
      } catch {
        child.kill(signal);
      }
    },
  };
}
