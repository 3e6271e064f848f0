import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RouteTable } from '../../../router/route-table.js';

/**
 * Reference semantics, written as plainly as possible: a wildcard label `*` matches one non-empty label,
 * exact beats wildcard, and between wildcards the one with a literal at the rightmost differing label wins.
 */
class ReferenceTable<T> {
  readonly routes = new Map<string, T>();

  get(host: string): T | undefined {
    const exact = this.routes.get(host);
    if (exact !== undefined && !host.split('.').includes('*')) return exact;
    const hostLabels = host.split('.');
    let best: string[] | undefined;
    let bestValue: T | undefined;
    for (const [pattern, value] of this.routes) {
      const labels = pattern.split('.');
      if (!labels.includes('*') || labels.length !== hostLabels.length) continue;
      if (!labels.every((l, i) => l === hostLabels[i] || (l === '*' && (hostLabels[i] as string).length > 0))) continue;
      if (best === undefined || moreSpecific(labels, best)) {
        best = labels;
        bestValue = value;
      }
    }
    return bestValue;
  }
}

function moreSpecific(a: string[], b: string[]): boolean {
  for (let i = a.length - 1; i >= 0; i--) {
    if (a[i] === b[i]) continue;
    return b[i] === '*';
  }
  return false;
}

describe('RouteTable', () => {
  it('looks up, replaces and deletes exact hosts', () => {
    const t = new RouteTable<string>();
    t.set('app.example.com', 'v1');
    expect(t.get('app.example.com')).toBe('v1');
    t.set('app.example.com', 'v2');
    expect(t.get('app.example.com')).toBe('v2');
    expect(t.size).toBe(1);
    expect(t.get('other.example.com')).toBeUndefined();
    expect(t.delete('app.example.com')).toBe(true);
    expect(t.delete('app.example.com')).toBe(false);
    expect(t.get('app.example.com')).toBeUndefined();
    expect(t.size).toBe(0);
  });

  it('matches a wildcard against exactly one label', () => {
    const t = new RouteTable<string>();
    t.set('*.example.com', 'wild');
    expect(t.get('a.example.com')).toBe('wild');
    expect(t.get('example.com')).toBeUndefined();
    expect(t.get('a.b.example.com')).toBeUndefined();
    expect(t.get('.example.com')).toBeUndefined();
    expect(t.get('a.example.org')).toBeUndefined();
    expect(t.wildcardSize).toBe(1);
  });

  it('prefers an exact host to a wildcard, and the most specific wildcard to others', () => {
    const t = new RouteTable<string>();
    t.set('*.*.example.com', 'two-stars');
    t.set('api.*.example.com', 'api-any-region');
    t.set('*.eu.example.com', 'any-in-eu');
    t.set('api.eu.example.com', 'exact');
    expect(t.get('api.eu.example.com')).toBe('exact');
    expect(t.get('web.eu.example.com')).toBe('any-in-eu');
    expect(t.get('api.us.example.com')).toBe('api-any-region');
    expect(t.get('web.us.example.com')).toBe('two-stars');
    t.delete('api.eu.example.com');
    // Rightmost difference decides: `eu` (literal) against `*`.
    expect(t.get('api.eu.example.com')).toBe('any-in-eu');
  });

  it('treats a star inside a label as a literal character', () => {
    const t = new RouteTable<string>();
    t.set('a*.example.com', 'literal');
    expect(t.get('ab.example.com')).toBeUndefined();
    expect(t.get('a*.example.com')).toBe('literal');
  });

  it('invalidates cached wildcard resolutions on every kind of update', () => {
    const t = new RouteTable<string>({ cacheSize: 100 });
    t.set('*.*.example.com', 'broad');
    expect(t.get('a.b.example.com')).toBe('broad'); // cached now
    t.set('a.*.example.com', 'narrower');
    expect(t.get('a.b.example.com')).toBe('narrower');
    t.set('a.*.example.com', 'narrower-v2'); // value change of a cached match
    expect(t.get('a.b.example.com')).toBe('narrower-v2');
    t.delete('a.*.example.com');
    expect(t.get('a.b.example.com')).toBe('broad');
    // A cached miss becomes a hit when a wildcard appears.
    expect(t.get('x.y.example.org')).toBeUndefined();
    t.set('x.*.example.org', 'new');
    expect(t.get('x.y.example.org')).toBe('new');
    // Exact and leading-star routes take precedence over anything cached.
    t.set('*.b.example.com', 'leading');
    expect(t.get('a.b.example.com')).toBe('leading');
    t.set('a.b.example.com', 'exact');
    expect(t.get('a.b.example.com')).toBe('exact');
    t.delete('a.b.example.com');
    t.delete('*.b.example.com');
    expect(t.get('a.b.example.com')).toBe('broad');
    t.clear();
    expect(t.get('a.b.example.com')).toBeUndefined();
    expect(t.size).toBe(0);
  });

  it('frees trie nodes of deleted wildcards', () => {
    const t = new RouteTable<number>();
    t.set('a.*.example.com', 1);
    t.set('b.*.example.com', 2);
    expect(t.delete('a.*.example.com')).toBe(true);
    expect(t.has('a.*.example.com')).toBe(false);
    expect(t.has('b.*.example.com')).toBe(true);
    expect(t.delete('a.*.example.com')).toBe(false);
    expect(t.delete('c.*.example.com')).toBe(false);
    expect(t.get('b.x.example.com')).toBe(2);
    expect(t.size).toBe(1);
  });

  const label = fc.constantFrom('a', 'b', 'c', 'x*');
  const patternLabel = fc.constantFrom('a', 'b', 'c', 'x*', '*', '*');
  const host = fc.array(label, { minLength: 1, maxLength: 4 }).map((ls) => ls.join('.'));
  const pattern = fc.array(patternLabel, { minLength: 1, maxLength: 4 }).map((ls) => ls.join('.'));
  const op = fc.oneof(
    fc.record({ kind: fc.constant('set' as const), host: pattern, value: fc.integer({ min: 0, max: 5 }) }),
    fc.record({ kind: fc.constant('delete' as const), host: pattern }),
    fc.record({ kind: fc.constant('get' as const), host }),
    fc.record({ kind: fc.constant('get' as const), host }),
  );

  it('agrees with the reference semantics over random updates and lookups (any cache size)', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), fc.constantFrom(0, 1, 3, 1000), (ops, cacheSize) => {
        const table = new RouteTable<number>({ cacheSize });
        const reference = new ReferenceTable<number>();
        for (const o of ops) {
          if (o.kind === 'set') {
            table.set(o.host, o.value);
            reference.routes.set(o.host, o.value);
          } else if (o.kind === 'delete') {
            expect(table.delete(o.host)).toBe(reference.routes.delete(o.host));
          } else {
            expect(table.get(o.host)).toBe(reference.get(o.host));
          }
          expect(table.size).toBe(reference.routes.size);
        }
      }),
      { numRuns: 400 },
    );
  });
});
