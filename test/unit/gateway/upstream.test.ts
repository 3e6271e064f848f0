import { describe, expect, it } from 'vitest';
import { OutlierDetector } from '../../../gateway/outlier.js';
import {
  p2cEwma,
  type Selector,
  selectReplica,
  sessionCookie,
  sessionOf,
  sticky,
  stickyKeyOf,
  stickyTarget,
} from '../../../gateway/selector.js';
import { UpstreamSet } from '../../../gateway/upstream.js';

const ids = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `n${i}.0@http://r${i}`, endpoint: `http://r${i}`, nodeId: `n${i}` }));

/** A set with a clock and a seeded random source the test controls. */
function setOf(n: number, opts: { slowStartMs?: number } = {}) {
  let now = 1_000_000;
  let seed = 42;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const set = new UpstreamSet({ now: () => now, random, slowStartMs: opts.slowStartMs ?? 0 });
  set.set(ids(n));
  return { set, advance: (ms: number) => (now += ms) };
}

const pickMany = (set: UpstreamSet, selector: Selector, n: number, key?: string) => {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const u = selector.pick(set, { exclude: undefined, stickyKey: key });
    if (u) counts.set(u.endpoint, (counts.get(u.endpoint) ?? 0) + 1);
  }
  return counts;
};

describe('Upstream and UpstreamSet', () => {
  it('counts attempts in flight per replica and per client, and enforces both caps', () => {
    const { set } = setOf(1);
    const u = set.all[0];
    if (!u) throw new Error('no upstream');
    const caps = { perReplica: 3, perClient: 2 };
    u.start('a');
    u.start('a');
    expect(u.available('a', caps)).toBe(false);
    expect(u.available('b', caps)).toBe(true);
    u.start('b');
    expect(u.available('b', caps)).toBe(false);
    u.end('a', 'cancelled', 0, set);
    expect([u.inFlight, u.inFlightOf('a'), u.available('b', caps)]).toEqual([2, 1, true]);
  });

  it('raises the latency estimate at once to a slow observation and lets P2C avoid that replica', () => {
    const { set } = setOf(2);
    const [fast, slow] = set.all;
    if (!fast || !slow) throw new Error('no upstreams');
    slow.start('c');
    slow.end('c', 'ok', 500, set);
    fast.start('c');
    fast.end('c', 'ok', 1, set);
    expect(set.decayedLatency(slow, set.now())).toBe(500);
    const counts = pickMany(set, p2cEwma, 1_000);
    expect(counts.get(fast.endpoint) ?? 0).toBeGreaterThan(counts.get(slow.endpoint) ?? 0);
  });

  it('keeps ejected replicas out of rotation until the panic threshold, where ejections are ignored', () => {
    const { set, advance } = setOf(4);
    const detector = new OutlierDetector({ consecutiveFailures: 3, baseEjectionMs: 1_000, maxEjectionMs: 8_000 });
    detector.report(set, ids(4)[0]?.id as string, 'connect');
    expect(pickMany(set, p2cEwma, 400).has('http://r0')).toBe(false);
    // Three of four ejected: below the 50 % threshold, every healthy replica is used again.
    detector.report(set, ids(4)[1]?.id as string, 'connect');
    detector.report(set, ids(4)[2]?.id as string, 'connect');
    expect(pickMany(set, p2cEwma, 400).size).toBe(4);
    advance(1_001);
    expect(set.isEjected(ids(4)[0]?.id as string)).toBe(false);
  });

  it('takes replicas failing health checks out of rotation, unless all of them fail', () => {
    const set = new UpstreamSet();
    set.set(ids(3), (e) => e === 'http://r1');
    expect([set.size, set.inRotation]).toEqual([3, 2]);
    expect(pickMany(set, p2cEwma, 300).has('http://r1')).toBe(false);
    set.set(ids(3), () => true);
    expect(set.inRotation).toBe(3);
  });
});

describe('selectors', () => {
  it('sticky maps a session key to one replica, keeps it when another joins, and falls back when it is out', () => {
    const { set } = setOf(3);
    const target = stickyTarget(set, 'session-1');
    expect(pickMany(set, sticky, 50, 'session-1')).toEqual(new Map([[target?.endpoint, 50]]));
    // Most keys keep their replica when a fourth joins (rendezvous hashing).
    const keys = Array.from({ length: 400 }, (_, i) => `k${i}`);
    const before = keys.map((k) => stickyTarget(set, k)?.id);
    set.set(ids(4));
    const moved = keys.filter((k, i) => stickyTarget(set, k)?.id !== before[i]);
    expect(moved.length).toBeLessThan(160);
    for (const k of moved) expect(stickyTarget(set, k)?.id).toBe(ids(4)[3]?.id);
    // Its replica down: the key goes elsewhere instead of failing.
    const t = stickyTarget(set, 'session-1');
    set.set(ids(4), (e) => e === t?.endpoint);
    const elsewhere = sticky.pick(set, { exclude: undefined, stickyKey: 'session-1' });
    expect(elsewhere).toBeDefined();
    expect(elsewhere?.id).not.toBe(t?.id);
  });

  it('reads the session key from the route’s header or cookie', () => {
    const policy = { stickyCookie: 'sid', stickyHeader: undefined };
    expect(stickyKeyOf({ cookie: 'a=1; sid=abc; b=2' }, policy)).toBe('abc');
    expect(stickyKeyOf({ 'x-user': 'u1' }, { stickyCookie: undefined, stickyHeader: 'x-user' })).toBe('u1');
    expect(stickyKeyOf({}, policy)).toBeUndefined();
  });

  it('mints a session only for a client without one, on a route whose cookie the gateway owns, where allowed', () => {
    const owned = { stickyCookie: 'sid', stickyHeader: undefined, stickyInsert: true };
    const a = sessionOf({}, owned);
    const b = sessionOf({}, owned);
    expect(a.minted).toMatch(/^[0-9a-f]{32}$/);
    expect(a.key).toBe(a.minted);
    expect(b.minted).not.toBe(a.minted);
    expect(sessionOf({ cookie: 'sid=kept' }, owned)).toEqual({ key: 'kept', minted: undefined });
    // The app owns the cookie, or this runtime does not mint (the Workers edge): no session is made up.
    expect(sessionOf({}, { ...owned, stickyInsert: false })).toEqual({ key: undefined, minted: undefined });
    expect(sessionOf({}, owned, false)).toEqual({ key: undefined, minted: undefined });
    expect(sessionCookie('sid', 'v')).toBe('sid=v; Path=/; HttpOnly; SameSite=Lax');
  });

  it('selectReplica skips replicas at their cap and says so when every one is full', () => {
    const { set } = setOf(2);
    const caps = { perReplica: 1, perClient: 1 };
    const first = selectReplica(p2cEwma, set, caps, 'c', undefined, { set: null });
    first.upstream?.start('c');
    // A session whose replica is the full one: the selector picks it first, so the cap must skip it.
    const key = Array.from({ length: 200 }, (_, i) => `k${i}`).find((k) => stickyTarget(set, k)?.id === first.upstream?.id);
    expect(key).toBeDefined();
    const second = selectReplica(sticky, set, caps, 'c', key, { set: null });
    expect(second.upstream).toBeDefined();
    expect(second.upstream?.id).not.toBe(first.upstream?.id);
    second.upstream?.start('c');
    expect(selectReplica(p2cEwma, set, caps, 'c', undefined, { set: null })).toEqual({ upstream: undefined, full: true });
  });
});
