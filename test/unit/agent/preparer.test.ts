import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { newInstanceSpec } from '../../../protocol/types.js';
import { DEFAULT_ARTIFACT_LIMITS } from '../../../quorum-agent/artifacts.js';
import { BlobStore } from '../../../quorum-agent/blobs.js';
import { ArtifactPreparer, type PrepareStatus } from '../../../quorum-agent/preparer.js';
import { tgzOf, writeBombTgz } from '../../helpers/tarballs.js';
import { tempDir, waitFor } from '../../helpers/tmp.js';

const dir = tempDir('allegra-preparer-');
afterAll(() => dir.cleanup());

function setup(fetchBlob: () => Promise<void> = async () => {}) {
  const blobs = new BlobStore(join(dir.path, `blobs-${Math.random()}`));
  const statuses: Array<{ name: string } & PrepareStatus> = [];
  let settled = 0;
  const preparer = new ArtifactPreparer({
    dataDir: join(dir.path, `data-${Math.random()}`),
    blobs,
    limits: DEFAULT_ARTIFACT_LIMITS,
    log: pino({ level: 'silent' }),
    fetchBlob,
    onSettled: () => settled++,
    onStatus: (spec, status) => statuses.push({ name: spec.name, ...status }),
  });
  return { blobs, preparer, statuses, settled: () => settled };
}

const spec = (name: string, sha256: string) =>
  newInstanceSpec({ id: `i-${name}`, name, owner: 'a'.repeat(64), artifact: { sha256, size: 1, holders: [] } });

describe('artifact preparer', () => {
  it('never waits: a bomb being checked does not hold up another instance, and is refused for good', async () => {
    const { blobs, preparer, statuses } = setup();
    const bombFile = join(dir.path, 'bomb.tgz');
    await writeBombTgz(bombFile, 1024 * 1024 * 1024);
    const { createReadStream } = await import('node:fs');
    const bomb = await blobs.write(createReadStream(bombFile));
    const good = await blobs.write(Readable.from([tgzOf([{ path: 'server.js', body: 'ok' }])]));

    expect(preparer.ready(spec('evil', bomb.sha256))).toBeUndefined();
    expect(preparer.ready(spec('nice', good.sha256))).toBeUndefined();
    const niceDir = await waitFor(() => preparer.ready(spec('nice', good.sha256)), { what: 'nice ready' });
    expect(readFileSync(join(niceDir, 'server.js'), 'utf8')).toBe('ok');
    await waitFor(() => preparer.status('i-evil')?.phase === 'failed', { what: 'bomb refused' });
    expect(preparer.status('i-evil')?.reason).toMatch(/expands more than|more than \d+ bytes/);
    expect(preparer.status('i-evil')?.retryAt).toBeUndefined();
    // Another instance with the same bytes gets the same verdict at once, without reading them again.
    expect(preparer.ready(spec('evil2', bomb.sha256))).toBeUndefined();
    expect(preparer.status('i-evil2')).toMatchObject({ phase: 'failed' });
    expect(statuses.filter((s) => s.name === 'nice').map((s) => s.phase)).toEqual(['unpacking', 'ready']);
    // Each instance has its own directory, even for the same code.
    const twin = await waitFor(() => preparer.ready(spec('twin', good.sha256)));
    expect(twin).not.toBe(niceDir);
  }, 60_000);

  it('retries a blob it could not fetch with backoff, and reports why', async () => {
    let calls = 0;
    const { preparer } = setup(async () => {
      calls++;
      throw new Error('no holder could provide blob');
    });
    expect(preparer.ready(spec('far', 'f'.repeat(64)))).toBeUndefined();
    await waitFor(() => preparer.status('i-far')?.phase === 'failed');
    const status = preparer.status('i-far') as PrepareStatus;
    expect(status.reason).toMatch(/no holder/);
    expect(status.retryAt).toBeGreaterThan(Date.now());
    await waitFor(() => calls >= 2, { timeoutMs: 5_000, what: 'a second attempt' });
    preparer.stop();
  });

  it('forgets a deleted instance and removes its code', async () => {
    const { blobs, preparer } = setup();
    const good = await blobs.write(Readable.from([tgzOf([{ path: 'a.js', body: 'a' }])]));
    const appDir = await waitFor(() => preparer.ready(spec('gone', good.sha256)));
    preparer.forget('i-gone');
    expect(existsSync(appDir)).toBe(false);
  });
});
