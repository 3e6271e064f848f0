import { defineConfig } from 'vitest/config';

/**
 * Suites whose assertions are about time under load (the attack suite: probe p99 < 50 ms while the gateway
 * is attacked) run after everything else, one file at a time, so that no other suite of the same run
 * competes with them for the two cores.
 */
const TIMING = ['test/integration/gateway-attacks.test.ts'];

const shared = {
  // Integration suites start real processes; two cores run at most two files at once.
  pool: 'forks' as const,
  testTimeout: 30_000,
  hookTimeout: 60_000,
  // A skipped or focused test in CI would hide a broken feature.
  allowOnly: false,
};

export default defineConfig({
  test: {
    ...shared,
    maxWorkers: 2,
    projects: [
      { test: { ...shared, name: 'main', include: ['test/**/*.test.ts'], exclude: TIMING, sequence: { groupOrder: 0 } } },
      { test: { ...shared, name: 'timing', include: TIMING, maxWorkers: 1, sequence: { groupOrder: 1 } } },
    ],
  },
});
