/**
 * The daemons' side of "a CLI that tells the truth": `allegra agent --json` and `allegra gateway --json` print
 * one JSON document once ready, and a devnet pointed at an unreachable ACME directory fails at once with the
 * reason instead of a minute of silence.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, DEVNET_FREE_PORTS, runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

function firstLine(child: ChildProcess, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`no output within ${timeoutMs} ms: ${err}`)), timeoutMs);
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(out.slice(0, nl));
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${err}`)));
  });
}

describe('daemons and devnet report in one JSON document or one line', () => {
  const dir = tempDir('allegra-daemons-');
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    dir.cleanup();
  });

  it('prints one JSON document when an agent and a gateway are ready', async () => {
    const registry = `embedded:${join(dir.path, 'registry')}`;
    const agent = spawn(
      process.execPath,
      [
        CLI,
        'agent',
        '--registry',
        registry,
        '--listen',
        '127.0.0.1:0',
        '--data',
        join(dir.path, 'agent'),
        '--json',
        '--log',
        join(dir.path, 'agent.log'),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(agent);
    const a = JSON.parse(await firstLine(agent));
    expect(a).toMatchObject({
      role: 'agent',
      node: expect.stringMatching(/^n-/),
      rpc: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/),
    });
    expect(a.ssh).toMatch(/^127\.0\.0\.1:\d+$/);
    const gateway = spawn(
      process.execPath,
      [CLI, 'gateway', '--registry', registry, '--http', '0', '--https', '0', '--admin', '0', '--json', '--log', join(dir.path, 'gw.log')],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(gateway);
    expect(JSON.parse(await firstLine(gateway))).toMatchObject({ role: 'gateway', http: expect.any(Number), admin: expect.any(Number) });
  });

  it('fails a devnet at once, with the reason, when the ACME directory cannot be reached', async () => {
    const started = Date.now();
    const r = await runCli(
      ['devnet', '--acme-directory', 'https://127.0.0.1:9/directory', '--data', join(dir.path, 'devnet'), ...DEVNET_FREE_PORTS],
      { ALLEGRA_HOME: join(dir.path, 'home') },
    );
    expect(r.code).toBe(1);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(/^allegra: cannot reach the ACME directory https:\/\/127\.0\.0\.1:9\/directory: /);
  });
});
