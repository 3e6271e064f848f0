import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A temp dir removed by the returned cleanup function. */
export function tempDir(prefix = 'allegra-test-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  // Retries: a process that is still ending may write one last file while the tree goes (ENOTEMPTY).
  // ALLEGRA_KEEP_TEST_DIRS=1 keeps them (logs, data dirs) for a look after a failure.
  const keep = process.env.ALLEGRA_KEEP_TEST_DIRS === '1';
  return {
    path,
    cleanup: () =>
      keep ? process.stderr.write(`kept ${path}\n`) : rmSync(path, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }),
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    await sleep(opts.intervalMs ?? 50);
  }
  throw new Error(`timed out waiting for ${opts.what ?? 'condition'}${last ? `: ${(last as Error).message}` : ''}`);
}
