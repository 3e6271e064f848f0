/**
 * The `process` driver: runs the instance's command in a shell with PORT set, in its own process group
 * (so stopping it stops whatever it forked) and, where util-linux `setpriv` exists, with a parent-death
 * signal so that a SIGKILLed agent leaves no orphaned replicas behind.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { request } from 'undici';
import type { Driver, ExitInfo, ReplicaHandle, ReplicaLaunch } from './driver.js';

/** No shell control operators, subshells or command substitution: safe to prefix with `exec`. */
const SIMPLE_COMMAND = /^[^;&|()`\n]+$/;

let setprivAvailable: boolean | undefined;
function hasSetpriv(): boolean {
  if (setprivAvailable === undefined) {
    setprivAvailable = process.platform === 'linux' && spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;
  }
  return setprivAvailable;
}

export interface ProcessDriverOptions {
  /** Path probed by the health check; any HTTP answer below 500 counts as healthy. */
  healthPath?: string;
  healthTimeoutMs?: number;
}

export class ProcessDriver implements Driver {
  readonly name = 'process' as const;
  constructor(private readonly opts: ProcessDriverOptions = {}) {}

  async start(launch: ReplicaLaunch): Promise<ReplicaHandle> {
    mkdirSync(dirname(launch.logFile), { recursive: true });
    const log = openSync(launch.logFile, 'a');
    const env = {
      ...process.env,
      ...launch.env,
      PORT: String(launch.port),
      HOST: '127.0.0.1',
      ALLEGRA_INSTANCE: launch.instanceName,
      ALLEGRA_INSTANCE_ID: launch.instanceId,
      ALLEGRA_REPLICA: String(launch.slot),
    };
    // A simple command replaces the shell (exec), so the replica's pid is the app itself and the
    // parent-death signal applies to the app; compound commands keep the shell as the group leader.
    const script = SIMPLE_COMMAND.test(launch.cmd) ? `exec ${launch.cmd}` : launch.cmd;
    const argv = hasSetpriv() ? ['setpriv', '--pdeathsig', 'KILL', '--', 'sh', '-c', script] : ['sh', '-c', script];
    const child = spawn(argv[0] as string, argv.slice(1), { cwd: launch.workDir, env, stdio: ['ignore', log, log], detached: true });
    closeSync(log);
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    let done = false;
    void exited.then(() => {
      done = true;
    });
    const endpoint = `http://127.0.0.1:${launch.port}`;
    const healthPath = this.opts.healthPath ?? '/';
    const timeout = this.opts.healthTimeoutMs ?? 1_000;
    const pid = child.pid ?? null;

    const signalGroup = (signal: NodeJS.Signals, evenAfterExit = false) => {
      if (pid === null || (done && !evenAfterExit)) return;
      try {
        process.kill(-pid, signal);
      } catch {
        try {
          child.kill(signal);
        } catch {
          /* already gone */
        }
      }
    };

    return {
      endpoint,
      pid,
      exited,
      health: async () => {
        if (done) return false;
        try {
          const res = await request(`${endpoint}${healthPath}`, {
            method: 'GET',
            headersTimeout: timeout,
            bodyTimeout: timeout,
            headers: { 'user-agent': 'allegra-health' },
          });
          await res.body.dump();
          return res.statusCode < 500;
        } catch {
          return false;
        }
      },
      stop: async (graceMs = 5_000) => {
        if (done) return;
        signalGroup('SIGTERM');
        const timer = setTimeout(() => signalGroup('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
        // Children of the shell that ignored SIGTERM must not outlive their replica.
        signalGroup('SIGKILL', true);
      },
    };
  }
}
