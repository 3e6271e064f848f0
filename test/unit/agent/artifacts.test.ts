import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ArtifactRefused, DEFAULT_ARTIFACT_LIMITS, inspectArtifact, unpackArtifact } from '../../../quorum-agent/artifacts.js';
import { type TarEntry, tgzOf, writeBombTgz, writeManyFilesTgz } from '../../helpers/tarballs.js';
import { tempDir } from '../../helpers/tmp.js';

const dir = tempDir('allegra-artifacts-');
afterAll(() => dir.cleanup());

let n = 0;
function file(bytes: Buffer): string {
  const path = join(dir.path, `a${n++}.tgz`);
  writeFileSync(path, bytes);
  return path;
}

async function refusal(path: string, limits = DEFAULT_ARTIFACT_LIMITS): Promise<string> {
  const target = join(dir.path, `out${n++}`);
  const errors: string[] = [];
  for (const attempt of [() => inspectArtifact(path, limits), () => unpackArtifact(path, target, limits)]) {
    try {
      await attempt();
      errors.push('accepted');
    } catch (err) {
      expect(err).toBeInstanceOf(ArtifactRefused);
      errors.push((err as Error).message);
    }
  }
  // A refused artifact leaves nothing behind, not even a partial directory.
  expect(existsSync(target)).toBe(false);
  expect(readdirSync(dir.path).filter((f) => f.startsWith(`out${n - 1}`))).toEqual([]);
  expect(errors[0]).not.toBe('accepted');
  expect(errors[1]).not.toBe('accepted');
  return errors[0] as string;
}

describe('artifact checks', () => {
  it('unpacks an ordinary app with normalized permissions and links that stay inside', async () => {
    const entries: TarEntry[] = [
      { path: 'app/', type: 'Directory' },
      { path: 'app/server.js', body: 'console.log(1)', mode: 0o4600 },
      { path: 'app/run.sh', body: '#!/bin/sh\n', mode: 0o700 },
      { path: 'app/bin/', type: 'Directory' },
      { path: 'app/bin/start', type: 'SymbolicLink', linkpath: '../server.js' },
    ];
    const target = join(dir.path, 'good');
    const summary = await unpackArtifact(file(tgzOf(entries)), target);
    expect(summary.entries).toBe(5);
    expect(readFileSync(join(target, 'app/server.js'), 'utf8')).toBe('console.log(1)');
    // No set-id bits and always readable, whatever the archive said.
    expect(statSync(join(target, 'app/server.js')).mode & 0o7777).toBe(0o644);
    expect(statSync(join(target, 'app/run.sh')).mode & 0o7777).toBe(0o755);
    expect(lstatSync(join(target, 'app/bin/start')).isSymbolicLink()).toBe(true);
  });

  it('refuses links, paths and entry types that could escape or surprise', async () => {
    const cases: Array<[TarEntry[], RegExp]> = [
      [[{ path: 'key', type: 'SymbolicLink', linkpath: '/root/.allegra/devnet/agent-0/node.json' }], /points outside/],
      [[{ path: 'a/b', type: 'SymbolicLink', linkpath: '../../etc' }], /points outside/],
      [[{ path: '../escape.js', body: 'x' }], /climbs out|\.\./],
      [[{ path: 'a/../../escape.js', body: 'x' }], /climbs out/],
      [[{ path: '/etc/cron.d/x', body: 'x' }], /absolute/],
      [[{ path: 'hard', type: 'Link', linkpath: 'etc/passwd' }], /hard link/],
      [[{ path: 'dev', type: 'CharacterDevice' }], /CharacterDevice/],
      [[{ path: 'fifo', type: 'FIFO' }], /FIFO/],
      [[{ path: `${'d/'.repeat(40)}f`, body: 'x' }], /deeper/],
    ];
    for (const [entries, reason] of cases) expect(await refusal(file(tgzOf(entries)))).toMatch(reason);
  });

  it('refuses bytes that are not a gzipped tar, and an empty archive', async () => {
    expect(await refusal(file(Buffer.from('this is not gzip at all, just thirty bytes')))).toMatch(/not a gzipped tar/);
    expect(await refusal(file(Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0])))).toMatch(/not a valid/);
    expect(await refusal(file(tgzOf([])))).toMatch(/empty|not a valid/);
  });

  it('refuses too many files early, and a compression bomb before it is expanded', async () => {
    const many = join(dir.path, 'many.tgz');
    await writeManyFilesTgz(many, 200_000);
    const t0 = performance.now();
    expect(await refusal(many)).toMatch(/more than 50000 entries/);
    expect(performance.now() - t0).toBeLessThan(10_000);

    const bomb = join(dir.path, 'bomb.tgz');
    await writeBombTgz(bomb, 1024 * 1024 * 1024);
    expect(statSync(bomb).size).toBeLessThan(2 * 1024 * 1024);
    const t1 = performance.now();
    expect(await refusal(bomb)).toMatch(/expands more than|more than \d+ bytes/);
    // Refused from the declared size and the ratio, long before 1 GiB was inflated.
    expect(performance.now() - t1).toBeLessThan(3_000);
  }, 60_000);

  it('accepts a large file that does not compress (the expansion is measured on inflated bytes)', async () => {
    const summary = await inspectArtifact(file(tgzOf([{ path: 'random.bin', body: randomBytes(40 * 1024 * 1024) }])));
    expect(summary.bytes).toBe(40 * 1024 * 1024);
  }, 30_000);

  it('enforces the unpacked-size limit on honest archives too', async () => {
    const limits = { ...DEFAULT_ARTIFACT_LIMITS, maxUnpackedBytes: 1000 };
    expect(await refusal(file(tgzOf([{ path: 'big', body: Buffer.alloc(2000, 7) }])), limits)).toMatch(/more than 1000 bytes/);
  });
});
