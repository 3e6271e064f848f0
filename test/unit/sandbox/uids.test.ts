import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkRange, parseUidRange, UidAllocator } from '../../../quorum-agent/sandbox/uids.js';
import { tempDir } from '../../helpers/tmp.js';

describe('UidAllocator', () => {
  const dirs: Array<{ cleanup: () => void }> = [];
  const file = () => {
    const d = tempDir('allegra-uids-');
    dirs.push(d);
    return join(d.path, 'uids.json');
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) d.cleanup();
  });

  it('gives each instance its own uid and the same one again', () => {
    const a = new UidAllocator(file(), { first: 300_000, count: 10 });
    const x = a.allocate('i-x');
    const y = a.allocate('i-y');
    expect(x).toBe(300_000);
    expect(y).toBe(300_001);
    expect(a.allocate('i-x')).toBe(x);
  });

  it('keeps the mapping across restarts (a new allocator on the same file)', () => {
    const f = file();
    const first = new UidAllocator(f, { first: 300_000, count: 10 });
    first.allocate('i-a');
    const b = first.allocate('i-b');
    const again = new UidAllocator(f, { first: 300_000, count: 10 });
    expect(again.get('i-b')).toBe(b);
    expect(again.allocate('i-c')).toBe(300_002);
    expect(JSON.parse(readFileSync(f, 'utf8')).uids).toEqual({ 'i-a': 300_000, 'i-b': 300_001, 'i-c': 300_002 });
  });

  it('never reuses a uid while it is held, reuses it after release, and fails clearly when the range is full', () => {
    const f = file();
    const a = new UidAllocator(f, { first: 300_000, count: 2 });
    a.allocate('i-1');
    a.allocate('i-2');
    expect(() => a.allocate('i-3')).toThrow(/no free uid left in 300000-300001/);
    a.release('i-1');
    expect(new UidAllocator(f, { first: 300_000, count: 2 }).get('i-1')).toBeUndefined();
    expect(a.allocate('i-3')).toBe(300_000);
    expect(a.get('i-2')).toBe(300_001);
  });

  it('refuses ranges with root or the agent’s own uid, and a damaged file', () => {
    expect(() => checkRange({ first: 0, count: 5 })).toThrow();
    expect(() => checkRange({ first: 1000, count: 10 }, 1005)).toThrow(/agent's own uid 1005/);
    expect(() => checkRange({ first: 2 ** 32, count: 1 })).toThrow();
    const f = file();
    writeFileSync(f, '{"nope":1}');
    expect(() => new UidAllocator(f, { first: 300_000, count: 2 })).toThrow(/not a uid allocation file/);
    writeFileSync(f, JSON.stringify({ range: { first: 1, count: 1 }, uids: { 'i-1': 0 } }));
    expect(() => new UidAllocator(f, { first: 300_000, count: 2 })).toThrow(/forbidden uid 0/);
  });

  it('parses FIRST-LAST and FIRST+COUNT', () => {
    expect(parseUidRange('200000-209999')).toEqual({ first: 200_000, count: 10_000 });
    expect(parseUidRange('210000+500')).toEqual({ first: 210_000, count: 500 });
    expect(() => parseUidRange('lots')).toThrow(/FIRST-LAST/);
    expect(() => parseUidRange('5-1')).toThrow();
  });
});
