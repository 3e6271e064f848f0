/**
 * Time to start a replica with and without the sandbox: from `driver.start()` to the first healthy answer
 * (through the relay socket when sandboxed), and the time `stop()` takes, for the echo test app under the
 * real `process` driver. Runs alternate between the two modes so machine drift hits both alike. Needs root,
 * bubblewrap and socat (the sandbox half is reported as not measured otherwise). Goal: the sandbox adds
 * at most 100 ms to a start.
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pino from 'pino';
import type { ReplicaHandle, ReplicaLaunch } from '../quorum-agent/drivers/driver.js';
import { ProcessDriver } from '../quorum-agent/drivers/process.js';
import { Sandbox } from '../quorum-agent/sandbox/sandbox.js';
import { probeSandbox } from '../quorum-agent/sandbox/support.js';
import { UidAllocator } from '../quorum-agent/sandbox/uids.js';

const APP = fileURLToPath(new URL('../../test/fixtures/echo-app/', import.meta.url));

interface Sample {
  startMs: number;
  stopMs: number;
}

async function once(driver: ProcessDriver, launch: ReplicaLaunch): Promise<Sample> {
  const t0 = performance.now();
  const handle: ReplicaHandle = await driver.start(launch);
  const deadline = Date.now() + 10_000;
  while (!(await handle.health())) {
    if (Date.now() > deadline) {
      await handle.stop(0);
      throw new Error('replica did not become healthy within 10 s');
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  const startMs = performance.now() - t0;
  const t1 = performance.now();
  await handle.stop(2_000);
  return { startMs, stopMs: performance.now() - t1 };
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))];

export async function main(opts: { quick: boolean }): Promise<string> {
  const runs = opts.quick ? 3 : 15;
  const dir = mkdtempSync(join(tmpdir(), 'allegra-bench-start-'));
  const log = pino({ level: 'silent' });
  const support = probeSandbox();
  const launch: ReplicaLaunch = {
    instanceId: 'i-benchstart01',
    instanceName: 'bench',
    owner: '0'.repeat(64),
    slot: 0,
    workDir: join(dir, 'app'),
    cmd: 'node server.mjs',
    env: {},
    listenPort: 0,
    logFile: join(dir, 'replica.log'),
  };
  rmSync(launch.workDir, { recursive: true, force: true });
  mkdirSync(launch.workDir, { recursive: true });
  cpSync(APP, launch.workDir, { recursive: true });
  const host = new ProcessDriver({ support: { ok: false, reason: 'bench' }, policy: { allowUnsandboxed: true }, dataRoot: dir });
  let sandboxed: ProcessDriver | undefined;
  let sandbox: Sandbox | undefined;
  let note = '';
  if (support.ok) {
    sandbox = new Sandbox(
      support,
      join(dir, 'sandbox'),
      new UidAllocator(join(dir, 'uids.json'), { first: 290_000, count: 10 }),
      `allegra-bench-${process.pid}`,
      log,
    );
    await sandbox.open();
    sandboxed = new ProcessDriver({ support, sandbox, dataRoot: dir });
  } else note = `sandbox not measured: ${support.reason}`;
  const samples: Record<'host' | 'sandbox', Sample[]> = { host: [], sandbox: [] };
  try {
    // One warm-up each (page cache, first chown of the artifact), not recorded.
    await once(host, launch);
    if (sandboxed) await once(sandboxed, launch);
    for (let i = 0; i < runs; i++) {
      samples.host.push(await once(host, launch));
      if (sandboxed) samples.sandbox.push(await once(sandboxed, launch));
    }
  } finally {
    await sandbox?.destroy(launch.instanceId);
    await sandbox?.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const fmt = (v: number | undefined) => (v === undefined ? '–' : v.toFixed(1));
  const summary = (s: Sample[]) => {
    const start = s.map((x) => x.startMs).sort((a, b) => a - b);
    const stop = s.map((x) => x.stopMs).sort((a, b) => a - b);
    return { start, stop, median: pct(start, 0.5) };
  };
  const h = summary(samples.host);
  const b = summary(samples.sandbox);
  const added = b.median !== undefined && h.median !== undefined ? b.median - h.median : undefined;
  const row = (label: string, s: ReturnType<typeof summary>) =>
    `| ${label} | ${s.start.length} | ${fmt(s.start[0])} | ${fmt(s.median)} | ${fmt(pct(s.start, 0.9))} | ${fmt(s.start.at(-1))} | ${fmt(pct(s.stop, 0.5))} |`;
  const md = [
    '#### Time to start a replica, with and without the sandbox',
    '',
    'The `process` driver starting the echo test app (`node server.mjs`) until its first healthy answer (HTTP GET `/`, polled every 2 ms; through the relay socket when sandboxed), then stopping it; the two modes alternate. Sandboxed = uid switch, bubblewrap namespaces, cgroup creation and limits, socat relay; the difference of the medians is what the sandbox adds. Goal ≤ 100 ms.',
    '',
    '| mode | runs | min ms | median ms | p90 ms | max ms | stop median ms |',
    '| :--- | ---: | ---: | ---: | ---: | ---: | ---: |',
    row('unsandboxed (host process)', h),
    ...(sandboxed ? [row('sandboxed (bubblewrap + cgroups + relay)', b)] : []),
    '',
    added === undefined
      ? `Not compared: ${note}`
      : `The sandbox adds **${added.toFixed(1)} ms** to the median start (goal ≤ 100 ms: ${added <= 100 ? 'met' : 'not met'}).`,
    '',
  ].join('\n');
  process.stdout.write(`${md}\n`);
  return md;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main({ quick: process.argv.includes('--quick') });
}
