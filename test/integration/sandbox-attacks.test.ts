/**
 * The replica sandbox attacked from inside, on a real devnet (3 agent processes, real bubblewrap, real
 * cgroups): a hostile tenant tries to read the node key, the agent's files and environment, another
 * tenant's files and socket, the registry's abstract socket, the agents' RPC ports, to signal and ptrace
 * host processes, to exceed its memory and pids limits. The test fails if any attempt succeeds. Then: a
 * stopped instance leaves no process and no cgroup, and a SIGKILLed agent leaves no replica process behind.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InstanceStatus, ReplicaRecord } from '../../protocol/types.js';
import { freePort } from '../../quorum-agent/ports.js';
import { type CgroupLayout, readLayout, scopeDirs, scopeName } from '../../quorum-agent/sandbox/cgroups.js';
import { DOCUMENTED } from '../../quorum-agent/sandbox/env.js';
import { socketPathFor } from '../../registry/embedded.js';
import { cliJson, DEVNET_FREE_PORTS, type DevnetInfo, isRunning, runCli, startDevnet, stopDevnet } from '../helpers/cli.js';
import { sleep, tempDir, waitFor } from '../helpers/tmp.js';

/** A file under /proc/<pid>, or undefined once that process has exited. */
function procFile(pid: number, name: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${name}`, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
    throw err;
  }
}

const HOSTILE_APP = fileURLToPath(new URL('../fixtures/hostile-app/', import.meta.url));
const ECHO_APP = fileURLToPath(new URL('../fixtures/echo-app/', import.meta.url));

/** One request to a replica through its relay socket (the test runs as root, like the gateway here). */
async function viaSocket(r: ReplicaRecord, path: string, init: { method?: 'GET' | 'POST'; body?: string; timeoutMs?: number } = {}) {
  const client = new Client('http://localhost', { socketPath: r.endpoint.slice('unix:'.length) });
  try {
    const res = await request(`http://localhost${path}`, {
      dispatcher: client,
      method: init.method ?? 'GET',
      body: init.body,
      headersTimeout: init.timeoutMs ?? 15_000,
      bodyTimeout: init.timeoutMs ?? 15_000,
    });
    return { status: res.statusCode, json: (await res.body.json()) as Record<string, unknown> };
  } finally {
    await client.close();
  }
}

describe('sandbox: a hostile tenant on a real devnet', () => {
  const dir = tempDir('allegra-sbx-');
  const owner = { ALLEGRA_HOME: `${dir.path}/home` };
  const attacker = { ...owner, ALLEGRA_KEY: `${dir.path}/attacker.key` };
  const data = `${dir.path}/devnet`;
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo;
  const layout = readLayout();
  const cgroupsOf = (nodeId: string): string[] => {
    if ('error' in layout) return [];
    const agent = info.agents.find((a) => a.node === nodeId);
    return agent ? scopeDirs(layout as CgroupLayout, scopeName(nodeId, agent.pid)) : [];
  };
  /** Every process in the replica cgroups of a node, by cgroup name. */
  const replicaProcesses = (nodeId: string): Map<string, number[]> => {
    const out = new Map<string, number[]>();
    const [scope] = cgroupsOf(nodeId);
    if (!scope) return out;
    let names: string[] = [];
    try {
      names = readdirSync(scope, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name);
    } catch {
      return out;
    }
    for (const name of names) {
      const pids = cgroupsOf(nodeId).flatMap((s) => {
        try {
          return readFileSync(join(s, name, 'cgroup.procs'), 'utf8')
            .split('\n')
            .filter(Boolean)
            .map(Number);
        } catch {
          return [];
        }
      });
      out.set(name, [...new Set(pids)]);
    }
    return out;
  };
  const status = (name: string) => cliJson<InstanceStatus>(['status', name], owner);
  const statusAs = (name: string, env: Record<string, string>) => cliJson<InstanceStatus>(['status', name], env);
  const gatewayGet = async (host: string) => {
    const res = await request(`${info.http}/`, { headers: { host }, headersTimeout: 5_000 });
    await res.body.dump();
    return res.statusCode;
  };

  beforeAll(async () => {
    devnet = await startDevnet(['--no-demo', ...DEVNET_FREE_PORTS, '--data', data], owner);
    info = devnet.info;
    expect((await runCli(['keys', 'init'], owner)).code).toBe(0);
    expect((await runCli(['keys', 'init'], attacker)).code).toBe(0);
    await cliJson(['create', 'victim', '--from', ECHO_APP, '--replicas', '3:3'], owner);
    await cliJson(
      ['create', 'hostile', '--from', HOSTILE_APP, '--cmd', 'node server.mjs', '--replicas', '3:3', '--memory', '128', '--pids', '64'],
      attacker,
    );
  }, 120_000);

  afterAll(async () => {
    await stopDevnet(devnet, 10_000);
    // The agent this test SIGKILLs cannot remove its cgroup scope: do it for it.
    for (const a of info?.agents ?? []) {
      for (const scope of cgroupsOf(a.node)) {
        try {
          for (const d of readdirSync(scope, { withFileTypes: true })) if (d.isDirectory()) rmdirSync(join(scope, d.name));
          rmdirSync(scope);
        } catch {
          /* already removed by its agent */
        }
      }
    }
    dir.cleanup();
  });

  it('runs every replica sandboxed, each instance under its own unprivileged uid', async () => {
    expect((info as DevnetInfo & { sandboxed?: boolean }).sandboxed).toBe(true);
    const victim = await status('victim');
    const hostile = await statusAs('hostile', attacker);
    // Published endpoints are the node's counting relay (usage metering), in front of each sandbox's socket.
    for (const r of [...victim.replicas, ...hostile.replicas])
      expect(r.endpoint).toMatch(/^unix:\/.*\/meter\/i-[0-9a-f]+\.\d+\.[0-9a-f]+\.sock$/);
    const uids = new Map<string, Set<number>>();
    for (const s of [victim, hostile]) {
      const ids = new Set<number>();
      for (const r of s.replicas) {
        const who = (await viaSocket(r, '/whoami').catch(() => undefined))?.json;
        if (s.instance.name === 'hostile') {
          expect(who?.uid).toBeGreaterThanOrEqual(200_000);
          expect(who?.cwd).toBe('/app');
          ids.add(who?.uid as number);
        }
      }
      // From the host: every process of the instance's replicas runs as a non-root uid.
      for (const a of info.agents) {
        for (const [name, pids] of replicaProcesses(a.node)) {
          if (!name.startsWith(`${s.instance.id}.`)) continue;
          for (const pid of pids) {
            // A process may exit between listing the cgroup and reading it (a replica's short-lived child).
            const status = procFile(pid, 'status');
            const comm = procFile(pid, 'comm')?.trim();
            if (status === undefined || comm === undefined) continue;
            const line = status.match(/^Uid:\s+(\d+)/m);
            if (line && Number(line[1]) === 0) {
              // Only bwrap (outer and its init) stays root; it runs no tenant code.
              expect(comm).toBe('bwrap');
            } else ids.add(Number(line?.[1]));
          }
        }
      }
      uids.set(s.instance.name, ids);
    }
    const [v, h] = [uids.get('victim') as Set<number>, uids.get('hostile') as Set<number>];
    expect(v.size).toBeGreaterThan(0);
    for (const uid of h) expect(v.has(uid)).toBe(false);
    expect([...v, ...h].every((u) => u >= 200_000)).toBe(true);
  });

  it('lets no attempt to get out of the sandbox succeed', async () => {
    const victim = await status('victim');
    const hostile = await statusAs('hostile', attacker);
    const agentPorts = info.agents.map((a) => Number(new URL(a.rpc).port));
    const targets = {
      nodeKeys: info.agents.map((_, i) => `${data}/agent-${i}/node.json`),
      agentDirs: [data, ...info.agents.map((_, i) => `${data}/agent-${i}`)],
      agentPids: [...info.agents.map((a) => a.pid), info.gateway.pid, devnet.child.pid as number, process.pid],
      otherTenantFiles: info.agents.flatMap((_, i) => [
        `${data}/agent-${i}/sandbox/replicas/${victim.instance.id}`,
        `${data}/agent-${i}/apps/${victim.instance.id}`,
      ]),
      otherTenantSockets: victim.replicas.map((r) => r.endpoint.slice('unix:'.length)),
      registrySocket: socketPathFor(`${data}/registry`),
      agentRpcPorts: agentPorts,
      gatewayPort: Number(new URL(info.http).port),
      agentUid: process.getuid?.() ?? 0,
      allowedEnv: [...DOCUMENTED, 'PATH', 'HOME', 'LANG', 'TMPDIR', 'PWD', 'SHLVL', '_'],
    };
    expect(hostile.replicas).toHaveLength(3);
    for (const r of hostile.replicas) {
      const { status: code, json } = await viaSocket(r, '/attack', { method: 'POST', body: JSON.stringify(targets) });
      expect(code).toBe(200);
      const results = json as Record<string, { succeeded: boolean; detail?: string }>;
      expect(Object.keys(results).length).toBeGreaterThan(30);
      const succeeded = Object.entries(results)
        .filter(([, v]) => v.succeeded)
        .map(([k, v]) => `${k}: ${v.detail}`);
      expect(succeeded, `attacks that got through on ${r.nodeId}`).toEqual([]);
    }
    const own = await viaSocket(hostile.replicas[0] as ReplicaRecord, '/whoami');
    expect(own.json.env).toMatchObject({ ALLEGRA_DATA_DIR: '/data', PORT: '3000', ALLEGRA_INSTANCE: 'hostile' });

    // Control: the same app run unsandboxed on the host gets through, so the probes above do probe.
    const port = await freePort();
    const control = spawn(process.execPath, [join(HOSTILE_APP, 'server.mjs')], {
      env: { ...process.env, PORT: String(port) },
      stdio: 'ignore',
    });
    try {
      const results = await waitFor(async () => {
        const res = await request(`http://127.0.0.1:${port}/attack`, { method: 'POST', body: JSON.stringify(targets) });
        return (await res.body.json()) as Record<string, { succeeded: boolean }>;
      });
      for (const attack of [
        'read node key 0 by path',
        'read node key 1 through ../',
        'read node key 2 through /proc/self/root',
        `list agent data dir ${data}/agent-0`,
        `read agent ${info.agents[0]?.pid} environ`,
        `signal agent ${info.agents[1]?.pid}`,
        'see processes outside the sandbox',
        `read or list other tenant's ${data}/agent-0/apps/${victim.instance.id}`,
        'connect to the registry socket',
        'find the registry socket in /proc/net/unix',
        `reach agent RPC 127.0.0.1:${agentPorts[0]}`,
        'see the agent environment',
        'run as root or the agent uid',
      ])
        expect(results[attack]?.succeeded, `control: ${attack}`).toBe(true);
    } finally {
      control.kill('SIGKILL');
    }
  });

  it('stops a fork bomb at the pids limit', async () => {
    const hostile = await statusAs('hostile', attacker);
    const r = hostile.replicas[0] as ReplicaRecord;
    const res = await viaSocket(r, '/forkbomb?max=500');
    expect(res.status).toBe(200);
    // The app (node with its threads, the relay, the shell) and the sleepers share 64 pids.
    expect(res.json.sleeping as number).toBeGreaterThan(10);
    expect(res.json.sleeping as number).toBeLessThan(64);
    if (!('error' in layout) && layout.version === 1) {
      const cg = [...replicaProcesses(r.nodeId).keys()].find((n) => n.startsWith(`${hostile.instance.id}.${r.slot}.`));
      const events = readFileSync(join(cgroupsOf(r.nodeId)[1] as string, cg as string, 'pids.events'), 'utf8');
      expect(Number(/max (\d+)/.exec(events)?.[1])).toBeGreaterThan(0);
    }
    expect(await gatewayGet('victim.localhost')).toBe(200);
  });

  it('OOM-kills a replica past its memory limit and restarts it, while another tenant keeps answering 200', async () => {
    const before = await statusAs('hostile', attacker);
    const target = before.replicas[0] as ReplicaRecord;
    // From the host: the limit asked for at create time is the cgroup's.
    const cg = [...replicaProcesses(target.nodeId).keys()].find((n) => n.startsWith(`${before.instance.id}.${target.slot}.`));
    expect(cg).toBeDefined();
    if (!('error' in layout) && layout.version === 1) {
      const limit = readFileSync(join(cgroupsOf(target.nodeId)[0] as string, cg as string, 'memory.limit_in_bytes'), 'utf8');
      expect(Number(limit)).toBe(128 * 1024 * 1024);
    }
    let failures = 0;
    let served = 0;
    let hogging = true;
    // Bounded: the victim is asked every 20 ms while the hog runs and until the hostile replica is back (≤ 30 s).
    const load = (async () => {
      const until = Date.now() + 30_000;
      while (hogging && Date.now() < until) {
        const code = await gatewayGet('victim.localhost').catch(() => 0);
        if (code === 200) served++;
        else failures++;
        await sleep(20);
      }
    })();
    const hog = await viaSocket(target, '/hog?mb=1024', { timeoutMs: 20_000 }).catch((err: Error) => ({
      status: 0,
      json: { error: err.message },
    }));
    expect(hog.status, 'the hog must not get 1 GiB').not.toBe(200);
    const after = await waitFor(
      async () => {
        const s = await statusAs('hostile', attacker);
        const r = s.replicas.find((x) => x.nodeId === target.nodeId && x.slot === target.slot);
        return r?.healthy && r.restarts > target.restarts && r.pid !== target.pid ? r : undefined;
      },
      { timeoutMs: 20_000, what: 'the OOM-killed replica to be restarted' },
    );
    hogging = false;
    await load;
    expect(after.restarts).toBeGreaterThan(target.restarts);
    expect(served).toBeGreaterThan(10);
    expect(failures).toBe(0);
    const log = readFileSync(`${data}/logs/agent-${info.agents.findIndex((a) => a.node === target.nodeId)}.log`, 'utf8');
    expect(log).toMatch(/"code":137[^\n]*replica exited|replica exited[^\n]*"code":137|SIGKILL/);
  });

  it('stop leaves no process and no cgroup; delete releases the replica directories and the uid', async () => {
    const hostile = await statusAs('hostile', attacker);
    const id = hostile.instance.id;
    const pids = info.agents.flatMap((a) => [...replicaProcesses(a.node)].filter(([n]) => n.startsWith(`${id}.`)).flatMap(([, p]) => p));
    expect(pids.length).toBeGreaterThan(3);
    await cliJson(['stop', 'hostile'], attacker);
    await waitFor(
      () =>
        pids.every((p) => !isRunning(p)) &&
        info.agents.every((a) => [...replicaProcesses(a.node).keys()].every((n) => !n.startsWith(`${id}.`))),
      { timeoutMs: 15_000, what: 'hostile replicas, their processes and cgroups gone' },
    );
    const uidsOf = (i: number) => JSON.parse(readFileSync(`${data}/agent-${i}/sandbox/uids.json`, 'utf8')).uids as Record<string, number>;
    expect(info.agents.every((_, i) => uidsOf(i)[id] !== undefined)).toBe(true);
    await cliJson(['delete', 'hostile'], attacker);
    await waitFor(() => info.agents.every((_, i) => uidsOf(i)[id] === undefined), { timeoutMs: 15_000, what: 'uids released' });
    for (const i of info.agents.keys()) {
      expect(() => readdirSync(`${data}/agent-${i}/sandbox/replicas/${id}`)).toThrow(/ENOENT/);
    }
    expect(await gatewayGet('victim.localhost')).toBe(200);
  });

  it('leaves no replica process alive once its agent is SIGKILLed, compound commands included', async () => {
    await cliJson(['create', 'compound', '--from', ECHO_APP, '--cmd', 'sleep 1000 & node server.mjs', '--replicas', '3:3'], owner);
    const agent = info.agents[2] as DevnetInfo['agents'][number];
    const procs = [...replicaProcesses(agent.node).values()].flat();
    const comms = procs.map((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
      } catch {
        return '';
      }
    });
    expect(comms).toContain('sleep 1000');
    expect(comms.filter((c) => c.includes('node server.mjs')).length).toBeGreaterThanOrEqual(2);
    process.kill(agent.pid, 'SIGKILL');
    const killedAt = Date.now();
    await waitFor(() => procs.every((p) => !isRunning(p)), {
      timeoutMs: 3_000,
      intervalMs: 20,
      what: 'every replica process of the killed agent gone',
    });
    expect(Date.now() - killedAt).toBeLessThan(3_000);
  });
});
