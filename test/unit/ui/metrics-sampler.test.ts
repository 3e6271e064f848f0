import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MetricsSampler } from '../../../quorum-agent/ui/metrics-sampler.js';
import { parseSamples, quantile } from '../../../quorum-agent/ui/prometheus-text.js';

describe('Prometheus text', () => {
  it('reads names, labels with escapes and values, and skips comments and malformed lines', () => {
    const text = [
      '# HELP allegra_gateway_requests_total Requests',
      '# TYPE allegra_gateway_requests_total counter',
      'allegra_gateway_requests_total{route="web",code="200"} 42',
      'allegra_gateway_requests_total{route="we\\"ird\\\\name\\n",code="503"} 3 1700000000000',
      'allegra_gateway_request_duration_seconds_bucket{le="+Inf",route="web"} 7',
      'broken{route="x} 1',
      'no_value{route="x"}',
      'allegra_gateway_in_flight 0',
    ].join('\n');
    expect(parseSamples(text)).toEqual([
      { name: 'allegra_gateway_requests_total', labels: { route: 'web', code: '200' }, value: 42 },
      { name: 'allegra_gateway_requests_total', labels: { route: 'we"ird\\name\n', code: '503' }, value: 3 },
      { name: 'allegra_gateway_request_duration_seconds_bucket', labels: { le: '+Inf', route: 'web' }, value: 7 },
      { name: 'allegra_gateway_in_flight', labels: {}, value: 0 },
    ]);
    expect(parseSamples(text, (n) => n === 'allegra_gateway_in_flight')).toHaveLength(1);
  });

  it('interpolates quantiles inside buckets as histogram_quantile does', () => {
    // 100 observations: 50 under 10 ms, 40 more under 100 ms, 10 more under 1 s.
    const buckets = new Map([
      [0.01, 50],
      [0.1, 90],
      [1, 100],
      [Number.POSITIVE_INFINITY, 100],
    ]);
    expect(quantile(0.5, buckets)).toBeCloseTo(0.01);
    expect(quantile(0.7, buckets)).toBeCloseTo(0.01 + (0.09 * 20) / 40);
    expect(quantile(0.99, buckets)).toBeCloseTo(0.1 + (0.9 * 9) / 10);
    expect(quantile(0.5, new Map([[Number.POSITIVE_INFINITY, 0]]))).toBeUndefined();
  });
});

describe('the metrics sampler', () => {
  let server: Server | undefined;
  afterEach(() => server?.close());

  it('turns two samples of a gateway into rates and percentiles per instance', async () => {
    const expositions = [
      ['allegra_gateway_requests_total{route="web",code="200"} 100', 'allegra_gateway_requests_total{route="web",code="502"} 0'],
      [
        'allegra_gateway_requests_total{route="web",code="200"} 180',
        'allegra_gateway_requests_total{route="web",code="502"} 20',
        'allegra_gateway_request_duration_seconds_bucket{route="web",le="0.005"} 50',
        'allegra_gateway_request_duration_seconds_bucket{route="web",le="0.05"} 100',
        'allegra_gateway_request_duration_seconds_bucket{route="web",le="+Inf"} 100',
        'allegra_gateway_upstreams_healthy{route="web"} 2',
        'allegra_gateway_ejections_total 1',
        'allegra_gateway_requests_total{route="-",code="404"} 9',
      ],
    ];
    let n = 0;
    server = createServer((_req, res) => res.end(`${(expositions[Math.min(n++, 1)] as string[]).join('\n')}\n`));
    await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
    const counters: unknown[] = [];
    const sampler = new MetricsSampler({
      gateways: () => [{ id: 'g1', publicKey: 'a'.repeat(64), startedAt: 0, metrics: url }],
      intervalMs: 60_000,
      onCounters: (d) => counters.push(d),
    });
    sampler.touch();
    // touch() starts a first scrape in the background; a tick while it runs is skipped, so tick until one counted.
    for (let i = 0; i < 100 && sampler.pointsOf('web').length === 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      await sampler.tick();
    }
    sampler.stop();
    const [point] = sampler.pointsOf('web');
    expect(point).toBeDefined();
    // 100 requests, 20 of them 502, in the time between the two samples.
    const seconds = 100 / (point?.rps as number);
    expect(seconds).toBeGreaterThan(0);
    expect((point?.errors5xx as number) * seconds).toBeCloseTo(20, 0);
    expect(point?.p50).toBeCloseTo(0.005);
    expect(point?.p99).toBeCloseTo(0.005 + (0.045 * 49) / 50);
    expect(point?.inRotation).toBe(2);
    expect(sampler.pointsOf('-')).toEqual([]);
    expect(counters).toEqual([{ ejections: 1, failovers: 0 }]);
  });

  it('never scrapes a loopback URL of a gateway on another machine', async () => {
    let hits = 0;
    server = createServer((_req, res) => {
      hits++;
      res.end('');
    });
    await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
    // The same wait for both: long enough for several scrapes to have gone out and been answered.
    const scrapesOf = async (machine: string) => {
      hits = 0;
      const sampler = new MetricsSampler({
        gateways: () => [{ id: 'g1', publicKey: 'a'.repeat(64), startedAt: 0, metrics: url, machine }],
        machine: 'mine',
        intervalMs: 60_000,
      });
      sampler.touch();
      for (let i = 0; i < 10; i++) {
        await new Promise((r) => setTimeout(r, 20));
        await sampler.tick();
      }
      sampler.stop();
      return hits;
    };
    // On this machine the URL is scraped (the control: the wait is long enough)…
    expect(await scrapesOf('mine')).toBeGreaterThan(0);
    // …on another machine's record it never is.
    expect(await scrapesOf('other')).toBe(0);
  });
});
