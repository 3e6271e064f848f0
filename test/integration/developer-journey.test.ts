/**
 * The developer's whole journey through the CLI on a real devnet (sandboxed replicas, three agents, a
 * gateway): create and deploy with truthful output, status and list, logs of what the app printed, SSH with
 * a plain OpenSSH client (PTY, exec exit codes, sftp), team keys added and removed, a history that verifies
 * and fails once a record is altered in the registry, revocation refusing every change while the app keeps
 * answering, governance with M and M−1 signatures, node-signed usage, verification without a key, and the
 * CLI moving to another agent when its own dies.
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keys } from '../../protocol/keys.js';
import type { InstanceStatus } from '../../protocol/types.js';
import { openRegistry } from '../../registry/open.js';
import { CLI, cliJson, DEVNET_FREE_PORTS, type DevnetInfo, runCli, startDevnet } from '../helpers/cli.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

const APP = fileURLToPath(new URL('../fixtures/journey-app/', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('the developer journey through the CLI', () => {
  const dir = tempDir('allegra-journey-');
  const home = join(dir.path, 'home');
  const env = { ALLEGRA_HOME: home };
  const data = join(dir.path, 'devnet');
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo;
  const keyOf = (name: string) => join(dir.path, `${name}.key`);
  const as = (name: string) => ({ ...env, ALLEGRA_KEY: keyOf(name) });
  const publicKey = async (name: string) => (await cliJson<{ publicKey: string }>(['keys', 'init'], as(name))).publicKey;

  const get = async (host: string, path = '/') => {
    const res = await request(`${info.http}${path}`, { headers: { host } });
    return { status: res.statusCode, text: await res.body.text() };
  };

  /** The plain OpenSSH command `allegra ssh --print` gives, as argv. */
  const sshArgv = async (name: string, who?: string, replica?: number) => {
    const printed = await cliJson<{ command: string; identity: string; knownHosts: string; port: number; host: string; user: string }>(
      ['ssh', name, '--print', ...(replica === undefined ? [] : ['--replica', String(replica)])],
      who ? as(who) : env,
    );
    const words = printed.command.split(' ');
    // Exactly what was printed, plus no prompts and a strict host key check against the CLI's known_hosts.
    const options = [...words.slice(1, -1), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes'];
    return { ...printed, options, argv: [...options, words.at(-1) as string] };
  };

  beforeAll(async () => {
    devnet = await startDevnet([...DEVNET_FREE_PORTS, '--data', data, '--no-demo'], env);
    info = devnet.info;
  }, 90_000);

  afterAll(() => {
    if (devnet && devnet.child.exitCode === null) devnet.child.kill('SIGKILL');
    dir.cleanup();
  });

  it('creates and deploys with output that tells the truth', async () => {
    const bad = await runCli(['create', 'Bad_Name'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    const usage = await runCli(['create', 'x', '--bogus'], env);
    expect(usage.code).toBe(2);
    expect(usage.stderr.trim().split('\n')).toHaveLength(1);

    const created = await cliJson<{ url: string; instance: { version: number } }>(['create', 'hello', '--replicas', '2:2'], env);
    // The URL carries the gateway's port and works once code is deployed.
    const port = new URL(info.http).port;
    expect(created.url).toBe(`http://hello.localhost:${port}/`);
    expect(created.instance.version).toBe(0);
    const deployed = await cliJson<{ version: number }>(['deploy', 'hello', APP, '--cmd', 'node server.mjs'], env);
    expect(deployed.version).toBe(1);
    const curl = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', created.url]);
    expect(curl.stdout).toBe('200');

    const list = await cliJson<{ instances: Array<{ name: string; version: number; running: { healthy: number; want: number } }> }>(
      ['list'],
      env,
    );
    expect(list.instances.find((i) => i.name === 'hello')).toMatchObject({ version: 1, running: { healthy: 2, want: 2 } });

    const status = await runCli(['status', 'hello'], env);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/MEMBER\s+REPLICA\s+STATE\s+HEALTHY\s+VERSION\s+RESTARTS\s+LAST FAILURE/);
    expect(status.stdout).toContain(created.url);
    const s = await cliJson<InstanceStatus>(['status', 'hello'], env);
    expect(s.urls).toEqual([created.url]);
    expect(s.replicas.map((r) => r.version)).toEqual([1, 1]);

    // stop/start change no version; a second stop says so.
    expect((await cliJson<{ version: number; changed: boolean }>(['stop', 'hello'], env)).changed).toBe(true);
    const again = await runCli(['stop', 'hello'], env);
    expect(again.stdout).toMatch(/already stopped; nothing changed/);
    expect((await cliJson<{ version: number }>(['start', 'hello'], env)).version).toBe(1);
    await waitFor(async () => (await get('hello.localhost')).status === 200, { timeoutMs: 15_000, what: 'hello back after start' });
  }, 90_000);

  it('runs the README tour as written, with the devnet’s ports: every command succeeds and every URL answers', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const tour = /## A tour of the CLI[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    const lines = tour
      .split('\n')
      .map((l) => l.replace(/\s+#\s.*$/, '').trim())
      .filter(Boolean);
    expect(lines.some((l) => l.includes('examples/demo'))).toBe(true);
    const [httpPort, httpsPort] = [new URL(info.http).port, new URL(info.https as string).port];
    for (const line of lines) {
      const cmd = line
        .replaceAll('npx allegra', `${process.execPath} ${CLI}`)
        .replaceAll('curl ', 'curl -fsS ')
        .replaceAll('~/.allegra/devnet', data)
        .replaceAll(':8080', `:${httpPort}`)
        .replaceAll(':8443', `:${httpsPort}`)
        .replace(/\bhello\b/g, 'tour');
      const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(
          'bash',
          ['-c', `${cmd} < /dev/null`],
          { cwd: ROOT, env: { ...process.env, ...env }, timeout: 120_000 },
          (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
        ),
      );
      expect(`${line} → ${r.code} ${r.stderr.trim()}`).toBe(`${line} → 0 `);
      if (line.startsWith('curl')) expect(JSON.parse(r.stdout)).toMatchObject({ hello: 'from Allegra', instance: 'tour' });
    }
  }, 90_000);

  it('shows a line the app printed, labelled with member and replica', async () => {
    const marker = `marker-${Date.now()}`;
    expect((await get('hello.localhost', `/${marker}`)).status).toBe(200);
    expect((await get('hello.localhost', `/warn-${marker}`)).status).toBe(200);
    const logs = await waitFor(
      async () => {
        const r = await cliJson<{ lines: Array<{ node: string; replica: number; stream: string; line: string }> }>(['logs', 'hello'], env);
        return r.lines.some((l) => l.line.includes(`/warn-${marker}`)) ? r : undefined;
      },
      { timeoutMs: 10_000, what: 'the app’s line in allegra logs' },
    );
    const line = logs.lines.find((l) => l.line === `journey-app saw /${marker}`);
    expect(line?.stream).toBe('out');
    expect(line?.node).toMatch(/^n-/);
    expect(logs.lines.find((l) => l.line.includes(`/warn-${marker}`))?.stream).toBe('err');
    // Both replicas, on their members, are in the merged output.
    expect(new Set(logs.lines.filter((l) => l.line.includes('listening')).map((l) => `${l.node}/${l.replica}`)).size).toBe(2);
    const text = await runCli(['logs', 'hello', '--since', '1m'], env);
    expect(text.stdout).toMatch(new RegExp(`n-\\w+/[01] out \\| journey-app saw /${marker}`));
  });

  it('opens SSH sessions inside the replica sandbox with a plain OpenSSH client', async () => {
    const ssh = await sshArgv('hello', undefined, 1);
    expect(ssh.user).toBe('hello.1');
    // A PTY through `script`: the shell sees a terminal, runs as the instance's uid, in the replica's sandbox.
    // (`tty` cannot name it: the pts device lives in the host's /dev, the sandbox has its own.)
    const pty = await run('script', [
      '-qec',
      `ssh -tt ${ssh.argv.join(' ')} '[ -t 0 ] && [ -t 1 ] && echo on-a-terminal; id -u; hostname; exit 5'`,
      '/dev/null',
    ]);
    expect(pty.stdout).toMatch(/on-a-terminal/);
    const uid = Number(/^(\d+)\r?$/m.exec(pty.stdout)?.[1]);
    expect(uid).toBeGreaterThanOrEqual(200000);
    expect(pty.stdout).toMatch(/hello-1\r?\n/);
    expect(pty.code).toBe(5);
    // Exec without a PTY keeps the command's exit code; the app's files are at /app, read-only.
    const exec = await run('ssh', [...ssh.argv, 'ls /app; touch /app/x 2>/dev/null || echo read-only; exit 7']);
    expect(exec.stdout).toMatch(/server\.mjs/);
    expect(exec.stdout).toMatch(/read-only/);
    expect(exec.code).toBe(7);
    // sftp upload into the replica's own data directory, read back inside the sandbox.
    const local = join(dir.path, 'upload.txt');
    writeFileSync(local, 'uploaded over sftp\n');
    const batch = join(dir.path, 'sftp.batch');
    writeFileSync(batch, `put ${local} /data/upload.txt\n`);
    const sftpArgs = ssh.argv.map((a) => (a === '-p' ? '-P' : a));
    expect(ssh.argv.at(-1)).toBe('hello.1@127.0.0.1');
    const sftp = await run('sftp', ['-b', batch, ...sftpArgs]);
    expect(sftp.code).toBe(0);
    const cat = await run('ssh', [...ssh.argv, 'cat /data/upload.txt; stat -c %u /data/upload.txt']);
    expect(cat.stdout).toContain('uploaded over sftp');
    expect(Number(cat.stdout.trim().split('\n').pop())).toBe(uid);
    // The CLI's own client: one command, its exit code.
    expect((await runCli(['ssh', 'hello', '--replica', '0', '--', 'exit 3'], env)).code).toBe(3);
    // A replica that does not run here fails with a reason.
    const wrong = await run('ssh', [...ssh.options, 'hello.9@127.0.0.1', 'true']);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/replica 9 of "hello" does not run on node/);
    // Every session is in the history, attested by the node.
    const h = await cliJson<{ records: Array<{ op: string; detail: { kind?: string; exitCode?: number } }> }>(['history', 'hello'], env);
    const kinds = h.records.filter((r) => r.op === 'ssh.start').map((r) => r.detail.kind);
    expect(kinds).toEqual(expect.arrayContaining(['exec', 'sftp']));
    expect(h.records.filter((r) => r.op === 'ssh.end').map((r) => r.detail.exitCode)).toEqual(expect.arrayContaining([5, 7, 3]));
  });

  it('adds a team key, then removes it: refused at once, SSH too', async () => {
    const teammate = await publicKey('teammate');
    expect((await runCli(['status', 'hello'], as('teammate'))).code).toBe(3);
    await cliJson(['auth', 'add', 'hello', teammate], env);
    expect((await runCli(['status', 'hello'], as('teammate'))).code).toBe(0);
    const ssh = await sshArgv('hello', 'teammate');
    expect((await run('ssh', [...ssh.argv, 'exit 0'])).code).toBe(0);
    const listed = await cliJson<{ keys: string[] }>(['auth', 'list', 'hello'], env);
    expect(listed.keys).toEqual([teammate]);
    // Only the owner manages keys.
    expect((await runCli(['auth', 'add', 'hello', await publicKey('other')], as('teammate'))).code).toBe(3);

    // A session of the key that is about to be removed: it is closed when the key goes.
    const open = run('ssh', [...ssh.argv, 'sleep 30'], 40_000);
    await waitFor(
      async () => {
        const h = await cliJson<{ records: Array<{ op: string; detail: { command?: string } }> }>(['history', 'hello'], env);
        return h.records.some((r) => r.op === 'ssh.start' && r.detail.command === 'sleep 30');
      },
      { timeoutMs: 10_000, what: 'the teammate’s session to start' },
    );
    const removedAt = Date.now();
    await cliJson(['auth', 'remove', 'hello', teammate], env);
    const cut = await open;
    expect(Date.now() - removedAt).toBeLessThan(10_000);
    expect(cut.code).not.toBe(0);
    expect(cut.stderr).toMatch(/key no longer authorized for instance "hello"; session closed/);
    const refused = await runCli(['status', 'hello'], as('teammate'));
    expect(refused.code).toBe(3);
    expect(refused.stderr).toMatch(/may not operate instance "hello"/);
    expect((await runCli(['deploy', 'hello', APP], as('teammate'))).code).toBe(3);
    const denied = await run('ssh', [...ssh.argv, 'exit 0']);
    expect(denied.code).toBe(255);
    expect(denied.stderr).toMatch(/Permission denied/);
  }, 90_000);

  it('verifies the history, and fails once a record is altered in the registry', async () => {
    const ok = await runCli(['history', 'hello', '--verify'], env);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/verified: \d+ records/);
    const { records, instanceId } = await cliJson<{ instanceId: string; records: Array<{ seq: number; op: string }> }>(
      ['history', 'hello'],
      env,
    );
    expect(records.map((r) => r.op).slice(0, 2)).toEqual(['create', 'deploy']);
    expect(records.map((r) => r.op)).toEqual(expect.arrayContaining(['stop', 'start', 'auth.add', 'auth.remove', 'ssh.start', 'ssh.end']));

    // An operator with the registry's admin credential rewrites a record: the deploy now names version 9.
    const registry = await openRegistry(`embedded:${join(data, 'registry')}`, { role: 'admin', host: 'never' });
    try {
      const key = keys.historyRecord(instanceId, 1);
      const kv = await registry.get(key);
      const altered = JSON.parse(kv?.value as string);
      altered.detail.version = 9;
      await registry.put(key, JSON.stringify(altered));
    } finally {
      await registry.close();
    }
    const bad = await runCli(['history', 'hello', '--verify'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/record 1: node signature does not match/);
  });

  it('revokes an instance: every change and SSH refused with one line, still served', async () => {
    await cliJson(['create', 'rev', '--replicas', '1:1', '--from', APP, '--cmd', 'node server.mjs'], env);
    const yesMissing = await runCli(['revoke', 'rev'], env);
    expect(yesMissing.code).toBe(2);
    await cliJson(['revoke', 'rev', '--yes'], env);
    const attempts = [
      ['deploy', 'rev', APP],
      ['stop', 'rev'],
      ['start', 'rev'],
      ['delete', 'rev'],
      ['expose', 'rev', '--no-wait'],
      ['auth', 'add', 'rev', await publicKey('teammate')],
      ['revoke', 'rev', '--yes'],
      ['ssh', 'rev', '--', 'true'],
    ];
    for (const args of attempts) {
      const r = await runCli(args, env);
      expect(`${args.join(' ')} → ${r.code}`).toBe(`${args.join(' ')} → 1`);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/instance "rev" is immutable: its owner revoked ownership at .*; it can never change again/);
    }
    // A plain ssh client gets the same reason from the node.
    const registry = await openRegistry(`embedded:${join(data, 'registry')}`, { role: 'admin', host: 'never' });
    const node = JSON.parse((await registry.list('nodes/')).items[0]?.value as string) as { ssh: string };
    await registry.close();
    const [host, port] = [node.ssh.slice(0, node.ssh.lastIndexOf(':')), node.ssh.slice(node.ssh.lastIndexOf(':') + 1)];
    const ssh = await run('ssh', [
      ...['-i', join(home, 'key.openssh'), '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no'],
      ...['-o', `UserKnownHostsFile=${join(dir.path, 'kh')}`, '-p', port as string, `rev@${host}`, 'true'],
    ]);
    expect(ssh.code).toBe(1);
    expect(ssh.stderr).toMatch(/immutable: its owner revoked ownership/);
    expect((await get('rev.localhost')).status).toBe(200);
    expect((await cliJson<InstanceStatus>(['status', 'rev'], env)).instance.immutable).toBe(true);
    const h = await cliJson<{ records: Array<{ op: string }> }>(['history', 'rev'], env);
    expect(h.records.at(-1)?.op).toBe('revoke');
  }, 90_000);

  it('applies a governance change with M signatures and refuses it with M−1', async () => {
    const [g1, g2, g3] = [await publicKey('g1'), await publicKey('g2'), await publicKey('g3')];
    await cliJson(['create', 'gov', '--replicas', '1:1', '--from', APP, '--cmd', 'node server.mjs'], env);
    await cliJson(['revoke', 'gov', '--yes', '--governance', `2:${g1},${g2},${g3}`], env);
    expect((await runCli(['stop', 'gov'], env)).stderr).toMatch(/a change needs 2 of its 3 governance keys/);

    const proposed = await cliJson<{ applied: boolean; proposal: { id: string; approvedBy: string[]; needed: number } }>(
      ['propose', 'gov', '--stop'],
      as('g1'),
    );
    // One signature (M−1): nothing changes; signing twice does not count twice; an outsider cannot sign.
    expect(proposed).toMatchObject({ applied: false, proposal: { approvedBy: [g1], needed: 2 } });
    expect((await runCli(['approve', 'gov', proposed.proposal.id], as('g1'))).code).toBe(1);
    expect((await runCli(['approve', 'gov', proposed.proposal.id], as('teammate'))).code).toBe(3);
    expect((await cliJson<InstanceStatus>(['status', 'gov'], as('g1'))).instance.state).toBe('running');
    expect((await get('gov.localhost')).status).toBe(200);

    const approved = await cliJson<{ applied: boolean }>(['approve', 'gov', proposed.proposal.id], as('g2'));
    expect(approved.applied).toBe(true);
    expect((await cliJson<InstanceStatus>(['status', 'gov'], as('g3'))).instance.state).toBe('stopped');
    await waitFor(async () => (await get('gov.localhost')).status === 503, { timeoutMs: 10_000, what: 'gov stopped' });
    // The change's record carries both signatures, and the whole history verifies for anyone holding it.
    const verified = await runCli(['history', 'gov', '--verify'], as('g3'));
    expect(verified.code).toBe(0);
    const h = await cliJson<{ records: Array<{ op: string; approvals?: unknown[] }> }>(['history', 'gov'], as('g3'));
    expect(h.records.at(-1)).toMatchObject({ op: 'governance' });
    expect(h.records.at(-1)?.approvals).toHaveLength(2);
  }, 90_000);

  it('reports usage per node, signed by the node that measured it', async () => {
    for (let i = 0; i < 20; i++) expect((await get('hello.localhost', `/usage-${i}`)).status).toBe(200);
    const usage = await waitFor(
      async () => {
        const u = await cliJson<{
          nodes: Array<{
            requests: number;
            bytesIn: number;
            bytesOut: number;
            cpuSeconds: number;
            replicaHours: number;
            verified: boolean;
          }>;
          total: { requests: number };
        }>(['usage', 'hello'], env);
        return u.total.requests >= 20 ? u : undefined;
      },
      { timeoutMs: 25_000, intervalMs: 1_000, what: 'usage records counting the requests' },
    );
    expect(usage.nodes.length).toBeGreaterThanOrEqual(2);
    for (const n of usage.nodes) {
      expect(n.verified).toBe(true);
      expect(n.bytesIn).toBeGreaterThan(0);
      expect(n.bytesOut).toBeGreaterThan(0);
      expect(n.replicaHours).toBeGreaterThan(0);
    }
    expect(usage.nodes.reduce((s, n) => s + n.cpuSeconds, 0)).toBeGreaterThan(0);
  });

  it('lets anyone verify, without a key, that a majority serves the recorded artifact', async () => {
    const stranger = { ALLEGRA_HOME: join(dir.path, 'stranger'), ALLEGRA_RPC: info.rpc };
    const v = await cliJson<{ ok: boolean; agreeing: number; needed: number; members: Array<{ ok: boolean }> }>(
      ['verify', 'hello'],
      stranger,
    );
    expect(v.ok).toBe(true);
    expect(v.agreeing).toBeGreaterThanOrEqual(v.needed);
    expect(v.members).toHaveLength(3);
  });

  it('fails over to another agent when its agent dies', async () => {
    const config = JSON.parse(readFileSync(join(home, 'config.json'), 'utf8')) as { rpc: string[] };
    expect(config.rpc).toHaveLength(3);
    const first = info.agents.find((a) => a.rpc === config.rpc[0]);
    process.kill(first?.pid as number, 'SIGKILL');
    const r = await runCli(['status', 'hello', '--json'], env);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).instance.name).toBe('hello');
    expect(r.stderr).toMatch(
      new RegExp(`agent ${config.rpc[0]?.replace(/\/$/, '')}/? did not answer \\(connection refused\\); using http`),
    );
  });
});
