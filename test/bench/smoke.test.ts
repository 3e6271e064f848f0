/**
 * Smoke test of the benchmark harness (not a benchmark: no performance thresholds). Runs
 * `node dist/bench/run.js --smoke` — direct, the 20-line proxy and the gateway (when its target
 * module is built), small GET, 1 round of 1 s, plus the fixed-rate phase — and checks that the
 * tables and the plot are produced with numeric figures.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const runJs = join(root, 'dist/bench/run.js');
const gatewayBuilt = existsSync(join(root, 'dist/bench/targets/allegra.js'));

interface RunOutcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runBench(args: string[], timeoutMs: number): Promise<RunOutcome> {
  return new Promise((resolvePromise) => {
    execFile(
      process.execPath,
      [runJs, ...args],
      { cwd: root, timeout: timeoutMs, killSignal: 'SIGTERM', maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolvePromise({ code, stdout, stderr });
      },
    );
  });
}

/** The cells of the markdown table row whose first cell is `label`, in the section titled `heading`. */
function rowCells(markdown: string, heading: string, label: string): string[] {
  const start = markdown.indexOf(`## ${heading}`);
  expect(start, `section "${heading}"`).toBeGreaterThanOrEqual(0);
  const next = markdown.indexOf('\n## ', start + 3);
  const section = markdown.slice(start, next < 0 ? undefined : next);
  const line = section.split('\n').find((l) => l.startsWith(`| ${label} |`));
  expect(line, `row "${label}" in "${heading}"`).toBeDefined();
  return (line ?? '')
    .split('|')
    .slice(1, -1)
    .map((c) => c.trim());
}

const isNumeric = (cell: string | undefined): boolean => cell !== undefined && /^[+−-]?\d+(\.\d+)?$/.test(cell);

describe('bench harness (smoke)', () => {
  let out = '';
  let outcome: RunOutcome;

  beforeAll(async () => {
    if (!existsSync(runJs)) {
      // `npm test` builds first (pretest); build here when the test is run on its own.
      execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
        cwd: root,
        stdio: 'inherit',
      });
    }
    out = mkdtempSync(join(tmpdir(), 'allegra-bench-smoke-'));
    outcome = await runBench(['--smoke', '--out', out], 55_000);
  }, 170_000);

  afterAll(() => {
    if (out) rmSync(out, { recursive: true, force: true });
  });

  it('runs to completion and writes RESULTS.md, latency.svg and results.json', () => {
    expect(outcome.code, `${outcome.stderr}\n${outcome.stdout.slice(-3000)}`).toBe(0);
    for (const f of ['RESULTS.md', 'latency.svg', 'results.json']) expect(existsSync(join(out, f)), f).toBe(true);
    expect(readFileSync(join(out, 'latency.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<polyline[\s\S]*<\/svg>\s*$/);
  });

  it('produces numeric figures for direct, the 20-line proxy and (when built) the gateway', () => {
    const md = readFileSync(join(out, 'RESULTS.md'), 'utf8');
    expect(md).toMatch(/## Machine/);
    const heading = 'GET, 12 B response';
    const targets = ['direct (no proxy)', 'node:http + undici Pool.stream (20 lines)'];
    if (gatewayBuilt) targets.push('Allegra gateway');
    for (const label of targets) {
      const [, rps, , p50, p99, p999] = rowCells(md, heading, label);
      for (const cell of [rps, p50, p99, p999]) expect(isNumeric(cell), `${label}: "${cell}"`).toBe(true);
      expect(Number(rps)).toBeGreaterThan(0);
      const [, achieved, , rateP99] = rowCells(md, 'Fixed rate', label);
      expect(isNumeric(achieved) && isNumeric(rateP99), `${label} fixed rate`).toBe(true);
    }
    const ratio = rowCells(md, heading, 'node:http + undici Pool.stream (20 lines)')[1];
    expect(isNumeric(ratio)).toBe(true);
    if (!gatewayBuilt) expect(rowCells(md, heading, 'Allegra gateway').at(-1)).toMatch(/unavailable/);
  });

  it('records the same figures in results.json', () => {
    const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as {
      matrix: { rows: { id: string; agg?: { rps: number; latency: { p99: number } } }[] }[];
    };
    const direct = json.matrix[0]?.rows.find((r) => r.id === 'direct');
    expect(Number.isFinite(direct?.agg?.rps)).toBe(true);
    expect(Number.isFinite(direct?.agg?.latency.p99)).toBe(true);
  });
});

describe('bench harness pieces', () => {
  const upstreams = ['http://127.0.0.1:41001', 'http://127.0.0.1:41002', 'http://127.0.0.1:41003'];

  it('generates an nginx config that nginx accepts', async () => {
    const { nginxConfig } = await import('../../bench/proxy/nginx.js');
    const { findBinary } = await import('../../bench/lib/proc.js');
    const dir = mkdtempSync(join(tmpdir(), 'allegra-bench-nginx-'));
    try {
      const conf = nginxConfig({ port: 41000, upstreams, workers: 2, dir });
      expect(conf).toMatch(/keepalive 64;/);
      expect(conf.match(/server 127\.0\.0\.1:4100\d;/g)).toHaveLength(3);
      const bin = findBinary('nginx');
      if (!bin) return;
      writeFileSync(join(dir, 'nginx.conf'), conf);
      execFileSync(bin, ['-t', '-q', '-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('generates a HAProxy config that haproxy accepts', async () => {
    const { haproxyConfig } = await import('../../bench/proxy/haproxy.js');
    const { findBinary } = await import('../../bench/lib/proc.js');
    const dir = mkdtempSync(join(tmpdir(), 'allegra-bench-haproxy-'));
    try {
      const cfg = haproxyConfig({ port: 41000, upstreams, threads: 2, dir });
      expect(cfg).toMatch(/nbthread 2/);
      expect(cfg.match(/server r\d 127\.0\.0\.1:4100\d/g)).toHaveLength(3);
      const bin = findBinary('haproxy');
      if (!bin) return;
      writeFileSync(join(dir, 'haproxy.cfg'), cfg);
      execFileSync(bin, ['-c', '-q', '-f', join(dir, 'haproxy.cfg')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('summarizes a failover timeline', async () => {
    const { summarizeFailover } = await import('../../bench/proxy/failover.js');
    expect(summarizeFailover([], 1000, 5000)).toEqual({ failed: 0, failedBeforeKill: 0, recoveryMs: 0, recovered: true });
    expect(summarizeFailover([900, 1001, 1250], 1000, 5000)).toEqual({
      failed: 2,
      failedBeforeKill: 1,
      recoveryMs: 250,
      recovered: true,
    });
    expect(summarizeFailover([1001, 4900], 1000, 5000).recovered).toBe(false);
  });

  it('computes nearest-rank percentiles and medians', async () => {
    const { percentileSorted, median, aggregate } = await import('../../bench/lib/stats.js');
    const xs = Float64Array.from({ length: 1000 }, (_, i) => i + 1);
    expect(percentileSorted(xs, 50)).toBe(500);
    expect(percentileSorted(xs, 99.9)).toBe(999);
    expect(median([3, 1, 2])).toBe(2);
    const lat = { p50: 1, p75: 1, p90: 1, p99: 2, p999: 3, p9999: 4, max: 5 };
    const agg = aggregate([
      { requests: 10, durationSec: 1, rps: 10, latency: lat, errors: 0, non2xx: 1 },
      { requests: 30, durationSec: 1, rps: 30, latency: { ...lat, p99: 4 }, errors: 2, non2xx: 0 },
    ]);
    expect(agg).toMatchObject({ rps: 20, rpsMin: 10, rpsMax: 30, errors: 2, non2xx: 1, requests: 40 });
    expect(agg.latency.p99).toBe(3);
  });
});
