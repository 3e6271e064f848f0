/**
 * The contract every instance driver keeps (quorum-agent/drivers/driver.ts), run against each real driver
 * the way the registry's contract suite runs against both backends: start, endpoint, health, the replica's
 * environment, logs, exec (for SSH sessions; drivers without processes must say so clearly), limits, stop
 * and destroy. The app is test/fixtures/contract-app (server.mjs as a process, app.js as a fetch module).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Driver,
  type ExecSession,
  ExecUnsupported,
  type ReplicaHandle,
  type ReplicaLaunch,
} from '../../quorum-agent/drivers/driver.js';
import { waitFor } from './tmp.js';

export interface DriverCapabilities {
  /** Whether replicas run commands (`exec`); a driver without processes must refuse with ExecUnsupported. */
  exec: false | { sandboxed: boolean };
  /** Whether the driver enforces the spec's memory limit (an unsandboxed process cannot, and is not asked to). */
  limits: boolean;
  /** How long a replica may take to become healthy (a VM boots under TCG for tens of seconds); 30 s by default. */
  startupMs?: number;
}

export interface DriverUnderTest {
  driver: Driver;
  /** A copy of test/fixtures/contract-app the driver may take over (the sandbox hands it to the instance's uid). */
  workDir: string;
  /** Where replica logs go. */
  logDir: string;
  /** The artifact hash a deploy would carry. */
  artifact: string;
  cleanup(): Promise<void>;
}

interface Reply {
  status: number;
  text: string;
}

const dispatchers = new Map<string, Agent>();
function dispatcherFor(endpoint: string): { origin: string; dispatcher: Agent } {
  const unix = endpoint.startsWith('unix:') ? endpoint.slice('unix:'.length) : undefined;
  let d = dispatchers.get(endpoint);
  if (!d) dispatchers.set(endpoint, (d = new Agent(unix ? { connect: { socketPath: unix } } : {})));
  return { origin: unix ? 'http://replica' : endpoint, dispatcher: d };
}

async function call(h: ReplicaHandle, path: string): Promise<Reply> {
  const { origin, dispatcher } = dispatcherFor(h.endpoint);
  const res = await request(`${origin}${path}`, { dispatcher, headersTimeout: 20_000, bodyTimeout: 20_000 });
  return { status: res.statusCode, text: await res.body.text() };
}

async function collect(session: ExecSession): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  session.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  session.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exit = await session.exited;
  // Output still in the pipes arrives before their end.
  await Promise.all([session.stdout, session.stderr].map((s) => (s.readableEnded ? null : new Promise((r) => s.once('close', r)))));
  return { code: exit.code, stdout, stderr };
}

export function driverContract(name: string, caps: DriverCapabilities, open: () => Promise<DriverUnderTest>): void {
  describe(`driver contract: ${name}`, () => {
    // Cases that start replicas may wait for two boots.
    const testMs = 2 * (caps.startupMs ?? 30_000) + 10_000;
    let t: DriverUnderTest;
    const handles: ReplicaHandle[] = [];
    const launch = (instanceId: string, over: Partial<ReplicaLaunch> = {}): ReplicaLaunch => ({
      instanceId,
      instanceName: `contract-${instanceId}`,
      owner: 'c'.repeat(64),
      slot: 0,
      workDir: t.workDir,
      artifact: t.artifact,
      cmd: 'node server.mjs',
      env: { GREETING: 'hi' },
      listenPort: 0,
      logFile: join(t.logDir, instanceId, 'replica-0.log'),
      ...over,
    });
    const start = async (instanceId: string, over?: Partial<ReplicaLaunch>) => {
      const h = await t.driver.start(launch(instanceId, over));
      handles.push(h);
      await waitFor(() => h.health(), { timeoutMs: caps.startupMs ?? 30_000, intervalMs: 200, what: `${name} replica healthy` });
      return h;
    };

    beforeAll(async () => {
      t = await open();
    }, 300_000);

    afterAll(async () => {
      await Promise.allSettled(handles.map((h) => h.stop(1_000)));
      await Promise.allSettled([...dispatchers.values()].map((d) => d.close()));
      dispatchers.clear();
      await t?.cleanup();
    });

    it(
      'starts a replica that serves HTTP at its endpoint, healthy, with its instance in its environment',
      async () => {
        const h = await start('i-contract00001');
        expect(h.endpoint).toMatch(/^(unix:\/|http:\/\/127\.0\.0\.1:\d+$)/);
        expect(await h.health()).toBe(true);
        const hello = await call(h, '/');
        expect(hello).toEqual({ status: 200, text: 'hello from contract-i-contract00001' });
      },
      testMs,
    );

    it("writes the replica's stdout and stderr to its log file", async () => {
      const h = handles[0] as ReplicaHandle;
      const { logFile } = launch('i-contract00001');
      expect((await call(h, '/log')).status).toBe(200);
      await waitFor(() => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('stderr line from contract-i-contract00001'), {
        what: 'log lines',
      });
      expect(readFileSync(logFile, 'utf8')).toContain('stdout line from contract-i-contract00001');
    });

    it('runs a command inside the replica (SSH sessions), or refuses clearly where there is nothing to run it in', async () => {
      const h = handles[0] as ReplicaHandle;
      if (!caps.exec) {
        const refused = await h.exec({ argv: ['sh'] }).then(
          () => null,
          (err: Error) => err,
        );
        // By name: the driver may come from the build output, whose class is not this module's.
        expect(refused?.name).toBe(new ExecUnsupported('').name);
        expect(refused?.message).toMatch(/no processes or shell/);
        return;
      }
      const session = await h.exec({
        argv: ['sh', '-c', 'echo "$ALLEGRA_INSTANCE $GREETING"; cat; id -u; cat /proc/sys/kernel/hostname; exit 3'],
        env: { GREETING: 'from-exec', ALLEGRA_INSTANCE: 'forged' },
      });
      const done = collect(session);
      session.stdin.end('typed in\n');
      const r = await done;
      const [who, typed, uid, hostname] = r.stdout.trim().split('\n');
      // The replica's own variables win over the session's; the session's others are added.
      expect(who).toBe('contract-i-contract00001 from-exec');
      expect(typed).toBe('typed in');
      expect(r.code).toBe(3);
      if (caps.exec.sandboxed) {
        // The instance's own uid and the sandbox's hostname: the command runs where the replica runs.
        expect(Number(uid)).toBeGreaterThan(0);
        expect(Number(uid)).not.toBe(process.getuid?.());
        expect(hostname).toBe('contract-i-contract00001-0');
      }
      // A session that does not end by itself is ended by kill().
      const sleeper = await h.exec({ argv: ['sleep', '600'] });
      sleeper.kill();
      expect((await sleeper.exited).signal ?? (await sleeper.exited).code).toBeTruthy();
    });

    // Only drivers that enforce limits are asked about them (an unsandboxed process has none to enforce).
    if (caps.limits)
      it(
        'keeps other replicas serving while one exceeds its memory limit, which does not succeed',
        async () => {
          const hog = await start('i-contract00002', { limits: { memoryMb: 64 } });
          const sibling = await start('i-contract00003');
          const over = await call(hog, '/alloc?mb=400').catch((err: Error) => ({ status: 0, text: err.message }));
          expect(over.status).not.toBe(200);
          expect(await call(sibling, '/')).toEqual({ status: 200, text: 'hello from contract-i-contract00003' });
          // The hog either ended (its supervisor restarts it) or refused the request and still answers.
          const ended = await Promise.race([hog.exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 3_000))]);
          if (!ended) expect(await call(hog, '/')).toEqual({ status: 200, text: 'hello from contract-i-contract00002' });
        },
        testMs,
      );

    it(
      'stops a replica: exited resolves, health fails, the endpoint no longer answers; destroy releases the instance',
      async () => {
        const h = await start('i-contract00004');
        await h.stop(2_000);
        const exit = await h.exited;
        expect(exit).toHaveProperty('code');
        expect(await h.health()).toBe(false);
        await expect(call(h, '/')).rejects.toThrow();
        await t.driver.destroy('i-contract00004');
        // Stopping twice is harmless.
        await h.stop(100);
      },
      testMs,
    );
  });
}
