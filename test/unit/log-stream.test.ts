import { openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { BatchedLineStream } from '../../cli/log-stream.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

describe('BatchedLineStream', () => {
  it('writes every pino line, in order, soon after it is logged', async () => {
    const dir = tempDir();
    const file = join(dir.path, 'out.log');
    const stream = BatchedLineStream.toFile(file);
    const log = pino({ name: 't' }, stream);
    for (let i = 0; i < 5_000; i++) log.info({ i }, 'line');
    await waitFor(() => readFileSync(file, 'utf8').split('\n').filter(Boolean).length === 5_000, { timeoutMs: 3_000, what: 'all lines' });
    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { i: number; msg: string });
    expect(lines.map((l) => l.i)).toEqual([...Array(5_000).keys()]);
    // A single line at low traffic still appears within the flush interval.
    log.info({ late: true }, 'alone');
    await waitFor(() => readFileSync(file, 'utf8').includes('"late":true'), { timeoutMs: 1_000, what: 'a lone line' });
    stream.close();
    dir.cleanup();
  });

  it('drops and counts lines beyond its memory bound instead of growing', () => {
    const dir = tempDir();
    const file = join(dir.path, 'out.log');
    const stream = new BatchedLineStream(openSync(file, 'a'), { batchBytes: 1 << 30, maxPendingBytes: 1_000 });
    for (let i = 0; i < 100; i++) stream.write(`${JSON.stringify({ i, pad: 'x'.repeat(50) })}\n`);
    stream.close();
    const text = readFileSync(file, 'utf8');
    expect(text.split('\n').filter((l) => l.includes('"pad"')).length).toBeLessThan(100);
    expect(text).toMatch(/"dropped":\d+/);
    dir.cleanup();
  });
});
