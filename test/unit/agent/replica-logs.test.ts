/** Replica output kept per slot: lines stamped and labelled, the size bounded however much a replica prints. */
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { followLogs, ReplicaLogWriter, readLogs, type SlotLine } from '../../../quorum-agent/logs.js';
import { tempDir, waitFor } from '../../helpers/tmp.js';

describe('replica logs', () => {
  const dir = tempDir('allegra-logs-');
  afterAll(() => dir.cleanup());

  it('keeps lines from both streams in time order, joining lines split across chunks', () => {
    const w = new ReplicaLogWriter(join(dir.path, 'replica-0.log'));
    w.write('out', 'hel', 1000);
    w.write('err', 'oops\n', 1001);
    w.write('out', 'lo\nworld\n', 1002);
    w.close();
    const w1 = new ReplicaLogWriter(join(dir.path, 'replica-1.log'));
    w1.write('out', 'other slot\n', 1001);
    w1.close();
    expect(readLogs(dir.path, 0, 100).map((l) => [l.replica, l.s, l.m])).toEqual([
      [0, 'err', 'oops'],
      [1, 'out', 'other slot'],
      [0, 'out', 'hello'],
      [0, 'out', 'world'],
    ]);
    expect(readLogs(dir.path, 1002, 100).map((l) => l.m)).toEqual(['hello', 'world']);
    expect(readLogs(dir.path, 0, 1).map((l) => l.m)).toEqual(['world']);
  });

  it('bounds a slot to twice its limit and cuts lines that never end', () => {
    const sub = join(dir.path, 'big');
    mkdirSync(sub);
    const w = new ReplicaLogWriter(join(sub, 'replica-0.log'), { maxBytes: 10_000, maxLine: 100 });
    for (let i = 0; i < 2_000; i++) w.write('out', `line ${i} ${'x'.repeat(50)}\n`);
    w.write('out', 'y'.repeat(1_000)); // no newline at all
    w.close();
    const total = readdirSync(sub).reduce((sum, f) => sum + statSync(join(sub, f)).size, 0);
    expect(total).toBeLessThanOrEqual(20_000);
    const lines = readLogs(sub, 0, 10_000);
    expect(lines.at(-1)?.m).toBe('y'.repeat(100));
    expect(lines.some((l) => l.m.startsWith('line 1999 '))).toBe(true);
    expect(lines.some((l) => l.m.startsWith('line 0 '))).toBe(false);
  });

  it('follows appended lines', async () => {
    const sub = join(dir.path, 'follow');
    mkdirSync(sub);
    const w = new ReplicaLogWriter(join(sub, 'replica-0.log'));
    w.write('out', 'before\n');
    const seen: SlotLine[] = [];
    const stop = followLogs(sub, (lines) => seen.push(...lines), 20);
    w.write('out', 'after\n');
    await waitFor(() => seen.length > 0, { what: 'followed line' });
    stop();
    w.close();
    expect(seen.map((l) => l.m)).toEqual(['after']);
  });
});
