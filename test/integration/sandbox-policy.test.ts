/**
 * A host that cannot sandbox (simulated with ALLEGRA_SANDBOX=off, which only ever makes a node refuse more):
 * `allegra devnet` still runs the developer's own instances (the demo included), unsandboxed but with a
 * clean environment, says so in one line, and every other owner's instance is refused with the reason in
 * its status.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InstanceStatus } from '../../protocol/types.js';
import { DOCUMENTED } from '../../quorum-agent/sandbox/env.js';
import { cliJson, DEVNET_FREE_PORTS, type DevnetInfo, runCli, startDevnet, stopDevnet } from '../helpers/cli.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

const HOSTILE_APP = fileURLToPath(new URL('../fixtures/hostile-app/', import.meta.url));

describe('sandbox policy on a host that cannot sandbox', () => {
  const dir = tempDir('allegra-nosbx-');
  const env = { ALLEGRA_HOME: `${dir.path}/home`, ALLEGRA_SANDBOX: 'off', AGENT_ONLY_SECRET: 'do-not-leak' };
  const other = { ...env, ALLEGRA_KEY: `${dir.path}/other.key` };
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo & { sandboxed?: boolean };
  const get = async (host: string, path = '/') => {
    const res = await request(`${info.http}${path}`, { headers: { host } });
    return { status: res.statusCode, text: await res.body.text() };
  };

  beforeAll(async () => {
    devnet = await startDevnet([...DEVNET_FREE_PORTS, '--data', `${dir.path}/devnet`], env, 90_000);
    info = devnet.info;
    expect((await runCli(['keys', 'init'], other)).code).toBe(0);
  }, 120_000);

  afterAll(async () => {
    await stopDevnet(devnet, 10_000);
    dir.cleanup();
  });

  it('starts the devnet with the demo, says once that replicas run unsandboxed, and the agents log why', async () => {
    expect(info.sandboxed).toBe(false);
    const warnings = devnet
      .stderr()
      .split('\n')
      .filter((l) => l.includes('cannot sandbox'));
    expect(warnings).toEqual([
      'allegra devnet: this host cannot sandbox replicas (sandboxing turned off by ALLEGRA_SANDBOX=off); your own instances run unsandboxed, others are refused',
    ]);
    expect((await get('demo.localhost')).status).toBe(200);
    const demo = await cliJson<InstanceStatus>(['status', 'demo'], env);
    // Unsandboxed replicas too are reached through the node's counting relay (usage metering).
    expect(demo.replicas.every((r) => r.healthy && /^unix:\/.*\/meter\/.*\.sock$/.test(r.endpoint))).toBe(true);
    const log = readFileSync(`${dir.path}/devnet/logs/agent-0.log`, 'utf8');
    expect(log).toMatch(
      /"reason":"sandboxing turned off by ALLEGRA_SANDBOX=off".*"trustedOwners":\["[0-9a-f]{64}"\].*runs only its trusted owners/,
    );
  });

  it('runs the trusted owner’s instance with a clean environment', async () => {
    await cliJson(['create', 'mine', '--from', HOSTILE_APP, '--cmd', 'node server.mjs', '--replicas', '1:1'], env);
    const who = JSON.parse((await get('mine.localhost', '/whoami')).text) as { env: Record<string, string>; uid: number };
    const allowed = new Set([...DOCUMENTED, 'PATH', 'HOME', 'LANG', 'TMPDIR', 'PWD', 'SHLVL', '_']);
    expect(Object.keys(who.env).filter((k) => !allowed.has(k))).toEqual([]);
    expect(who.env.AGENT_ONLY_SECRET).toBeUndefined();
    expect(who.env.ALLEGRA_DATA_DIR).toMatch(/\/sandbox\/replicas\/i-[0-9a-f]+\/0\/data$/);
  });

  it('refuses another owner’s instance and shows why in its status', async () => {
    await cliJson(['create', 'theirs', '--cmd', 'node server.mjs', '--replicas', '2:2'], other);
    await cliJson(['deploy', 'theirs', HOSTILE_APP, '--no-wait'], other);
    const s = await waitFor(
      async () => {
        const st = await cliJson<InstanceStatus>(['status', 'theirs'], other);
        return st.replicas.length === 2 && st.replicas.every((r) => r.lastError?.startsWith('refused:')) ? st : undefined;
      },
      { timeoutMs: 20_000, what: 'refused replica records' },
    );
    for (const r of s.replicas) {
      expect(r).toMatchObject({ healthy: false, endpoint: '', pid: null });
      expect(r.lastError).toMatch(/^refused: this node cannot sandbox replicas \(sandboxing turned off by ALLEGRA_SANDBOX=off\)/);
    }
    const human = await runCli(['status', 'theirs'], other);
    expect(human.stdout).toMatch(/n-\w+\s+\d\s+refused\s+no\s+\d+\s+\d+\s+refused: this node cannot sandbox replicas/);
    expect((await get('theirs.localhost')).status).toBe(503);
    // The trusted owner's apps are unaffected.
    expect((await get('demo.localhost')).status).toBe(200);
  });
});
