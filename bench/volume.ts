/**
 * Volumes (`--volume`): RPO and failover time when the writer's machine is lost. Three sandboxed agents and a
 * gateway on one machine (embedded registry); json-server (test/fixtures/json-server-app, deployed with its
 * node_modules) answers sequential POSTs through the gateway; after `--warm` seconds the agent running the
 * replica is SIGKILLed (its sandbox dies with it); POSTs go on until they are acknowledged again. Per round:
 * writes acknowledged before the kill, how many of them are gone afterwards, the age at the kill of the
 * oldest lost one (the observed RPO), and the failover time (SIGKILL to the next acknowledged write). The
 * killed agent then comes back and the next round starts. The peer, in the same run: the same app and
 * the same kill without `--volume` (its db.json in ALLEGRA_DATA_DIR, the replica's own directory).
 * Prints a Markdown section. Run: `npm run build && node dist/bench/volume.js [--rounds 3] [--warm 2]`.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { type Daemon, startDaemon, stopDaemon } from '../cli/children.js';
import { keys, PREFIX } from '../protocol/keys.js';
import type { InstanceStatus } from '../protocol/types.js';
import { openRegistry } from '../registry/open.js';
import { copyPackageInto } from '../test/helpers/npm-app.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'dist/cli/main.js');
const FIXTURE = join(ROOT, 'test/fixtures/json-server-app');

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cli<T>(args: string[], env: Record<string, string>): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args, '--json'], { env: { ...process.env, ...env }, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`allegra ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(JSON.parse(stdout) as T);
    });
  });
}

async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await check().catch(() => undefined);
    if (v) return v;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

interface Round {
  target: string;
  ackedBeforeKill: number;
  lost: number;
  /** Age at the kill of the oldest lost write (ms); 0 if none was lost. */
  oldestLostMs: number;
  failoverMs: number | null;
}

async function main(): Promise<void> {
  const rounds = arg('rounds', 3);
  const warmMs = arg('warm', 2) * 1000;
  const dir = mkdtempSync(join(tmpdir(), 'allegra-bench-volume-'));
  const registryUrl = `embedded:${join(dir, 'registry')}`;
  const agents: Daemon[] = [];
  let gateway: Daemon | undefined;
  const registry = await openRegistry(registryUrl, { role: 'admin' });
  try {
    await registry.put(keys.network(), JSON.stringify({ baseDomain: 'localhost', quorumSize: 3 }));
    const agentArgs = (i: number) => [
      'agent',
      '--registry',
      registryUrl,
      '--listen',
      '127.0.0.1:0',
      '--data',
      join(dir, `agent-${i}`),
      '--log',
      join(dir, `agent-${i}.log`),
      '--uid-range',
      `${240_000 + i * 1_000}+1000`,
    ];
    for (const d of await Promise.all([0, 1, 2].map((i) => startDaemon(`agent-${i}`, agentArgs(i), 60_000, CLI)))) agents.push(d);
    gateway = await startDaemon(
      'gateway',
      ['gateway', '--registry', registryUrl, '--http', '0', '--https', '0', '--admin', '0', '--log', join(dir, 'gateway.log')],
      60_000,
      CLI,
    );
    const alive = (d: Daemon) => d.child.exitCode === null && d.child.signalCode === null;
    const env = () => ({ ALLEGRA_HOME: join(dir, 'home'), ALLEGRA_RPC: String(agents.find(alive)?.ready.rpc) });
    await cli(['keys', 'init'], env());
    const ids = agents.map((a) => String(a.ready.node));
    await until('a quorum of the three agents', 30_000, async () => {
      const { items } = await registry.list(PREFIX.quorums);
      return ids.every((id) => items.some((kv) => (JSON.parse(kv.value) as { members: string[] }).members.includes(id))) || undefined;
    });
    const app = join(dir, 'app');
    mkdirSync(app);
    cpSync(FIXTURE, app, { recursive: true });
    copyPackageInto(app, 'json-server', ROOT);
    await cli(['create', 'vol', '--volume', '--from', app, '--cmd', 'sh start.sh'], env());
    await cli(['create', 'plain', '--replicas', '1:1', '--from', app, '--cmd', 'sh start.sh'], env());

    const gw = `http://127.0.0.1:${gateway.ready.http}`;
    const call = async (name: string, method: 'GET' | 'POST', body?: unknown) => {
      const res = await request(`${gw}/posts`, {
        method,
        headers: { host: `${name}.localhost`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: 3_000,
        bodyTimeout: 3_000,
      });
      return { status: res.statusCode, text: await res.body.text() };
    };
    const titles = async (name: string) => {
      const res = await call(name, 'GET');
      if (res.status !== 200) throw new Error(`GET ${name}/posts: ${res.status}`);
      return new Set((JSON.parse(res.text) as Array<{ title: string }>).map((p) => p.title));
    };

    const oneRound = async (name: string, n: number): Promise<Round> => {
      const st = await until(`${name} served by one healthy replica`, 60_000, async () => {
        const s = await cli<InstanceStatus>(['status', name], env());
        const healthy = s.replicas.filter((r) => r.healthy);
        const settled = !s.instance.volume || s.members.every((m) => m.volume?.complete);
        return healthy.length === 1 && settled && (await call(name, 'GET')).status === 200 ? s : undefined;
      });
      const victimNode = st.replicas.find((r) => r.healthy)?.nodeId;
      const victim = agents.findIndex((a) => a.ready.node === victimNode);
      if (victim < 0) throw new Error(`no agent runs ${name}'s replica`);
      const acked = new Map<string, number>();
      const start = Date.now();
      let killedAt = 0;
      let failed = false;
      let back = 0;
      let i = 0;
      while (Date.now() - start < warmMs + 60_000) {
        if (!killedAt && Date.now() - start > warmMs) {
          agents[victim]?.child.kill('SIGKILL');
          killedAt = Date.now();
        }
        const title = `${name}-${n}-${i++}`;
        const ok = await call(name, 'POST', { title }).then(
          (r) => r.status === 201,
          () => false,
        );
        if (ok) {
          acked.set(title, Date.now());
          if (failed && !back) back = Date.now();
        } else {
          failed ||= killedAt > 0;
          await sleep(50);
        }
        if (back && Date.now() - back > 500) break;
      }
      const present = await titles(name).catch(() => new Set<string>());
      const before = [...acked].filter(([, at]) => at <= killedAt);
      const lost = before.filter(([t]) => !present.has(t));
      const round: Round = {
        target: name,
        ackedBeforeKill: before.length,
        lost: lost.length,
        oldestLostMs: lost.length ? killedAt - Math.min(...lost.map(([, at]) => at)) : 0,
        failoverMs: back ? back - killedAt : null,
      };
      process.stderr.write(`${JSON.stringify(round)}\n`);
      agents[victim] = await startDaemon(`agent-${victim}`, agentArgs(victim), 60_000, CLI);
      return round;
    };

    const results: Round[] = [];
    for (let n = 0; n < rounds; n++) results.push(await oneRound('vol', n));
    results.push(await oneRound('plain', 0));

    const vol = results.filter((r) => r.target === 'vol');
    const worst = Math.max(...vol.map((r) => r.oldestLostMs));
    const failovers = vol.map((r) => r.failoverMs ?? Number.NaN).sort((a, b) => a - b);
    const out: string[] = [];
    out.push('## Volumes: RPO and failover when the writer machine is lost (issue 13)', '');
    out.push('`npm run build && node dist/bench/volume.js' + (rounds !== 3 ? ` --rounds ${rounds}` : '') + '`', '');
    out.push(
      `3 sandboxed agents + gateway, embedded registry, json-server via the gateway, sequential POSTs, SIGKILL of the agent running the replica after ${warmMs / 1000} s; load average at the end ${loadavg()[0]?.toFixed(1)}.`,
      '',
    );
    out.push('| instance | round | acked before kill | lost | oldest lost, age at kill | failover (kill → next ack) |');
    out.push('| --- | --- | --- | --- | --- | --- |');
    for (const [k, r] of results.entries())
      out.push(
        `| ${r.target === 'vol' ? '`--volume`' : 'peer: no volume (`/data`)'} | ${r.target === 'vol' ? k + 1 : 1} | ${r.ackedBeforeKill} | ${r.lost} | ${r.lost ? `${r.oldestLostMs} ms` : '—'} | ${r.failoverMs === null ? 'not back' : `${r.failoverMs} ms`} |`,
      );
    out.push(
      '',
      `RPO observed with \`--volume\`: at most ${worst} ms of acknowledged writes lost (aim ≤ 1000 ms); failover median ${failovers[Math.floor(failovers.length / 2)]} ms.`,
    );
    console.log(out.join('\n'));
  } finally {
    await Promise.allSettled([gateway, ...agents].filter((d): d is Daemon => d !== undefined).map((d) => stopDaemon(d, 5_000)));
    await registry.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
