/**
 * Short time series of each instance's traffic for the UI's plots, sampled from the gateways' Prometheus
 * metrics (their admin port, named in their `gateways/` record): requests/s, p50/p99 latency, 5xx/s,
 * replicas in rotation and cold starts, summed over every gateway this agent can reach. Counters become
 * rates between two samples of the same gateway (a restarted gateway's reset counts from zero).
 *
 * It samples only while the UI is in use (a request in the last five minutes), every two seconds, and
 * keeps ten minutes per instance: an agent nobody looks at scrapes nothing.
 */
import type { MetricPoint } from '../../protocol/metrics-point.js';
import type { GatewayRecord } from '../../protocol/types.js';
import { MAX_EXPOSITION_BYTES, parseSamples, quantile, type Sample } from './prometheus-text.js';

/** Network-wide counters that become events: ejections and retries on another replica (failovers). */
export interface GatewayCounters {
  ejections: number;
  failovers: number;
}

interface RouteTotals {
  requests: number;
  errors5xx: number;
  buckets: Map<number, number>;
  inRotation: number;
  coldStarts: number;
}

interface Scrape {
  t: number;
  routes: Map<string, RouteTotals>;
  ejections: number;
  failovers: number;
}

const KEEP_POINTS = 300;
const ACTIVE_FOR_MS = 5 * 60_000;
const WANTED = new Set([
  'allegra_gateway_requests_total',
  'allegra_gateway_request_duration_seconds_bucket',
  'allegra_gateway_upstreams_healthy',
  'allegra_gateway_ejections_total',
  'allegra_gateway_retries_total',
  'allegra_gateway_cold_start_seconds_count',
]);

export interface SamplerOptions {
  gateways: () => Iterable<GatewayRecord>;
  /** This agent's machine: a gateway's loopback metrics URL is reachable only from its own machine. */
  machine?: string;
  intervalMs?: number;
  /** Network-wide counter increases since the previous sample (for the event feed). */
  onCounters?: (delta: GatewayCounters) => void;
  /** Cold starts an instance (route) had since the previous sample. */
  onColdStarts?: (route: string, count: number) => void;
  fetchTimeoutMs?: number;
}

export class MetricsSampler {
  private readonly series = new Map<string, MetricPoint[]>();
  private readonly previous = new Map<string, Scrape>();
  private lastUse = 0;
  private timer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(private readonly opts: SamplerOptions) {}

  /** Marks the UI as in use; starts sampling if it was idle. */
  touch(): void {
    this.lastUse = Date.now();
    if (!this.timer) {
      this.timer = setInterval(() => void this.tick(), this.opts.intervalMs ?? 2_000);
      this.timer.unref();
      void this.tick();
    }
  }

  pointsOf(route: string): MetricPoint[] {
    return this.series.get(route) ?? [];
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private reachable(g: GatewayRecord): boolean {
    if (!g.metrics) return false;
    const host = new URL(g.metrics).hostname;
    const loopback = host === 'localhost' || host.startsWith('127.') || host === '[::1]';
    return !loopback || g.machine === undefined || g.machine === this.opts.machine;
  }

  async tick(): Promise<void> {
    if (Date.now() - this.lastUse > ACTIVE_FOR_MS) return this.stop();
    if (this.running) return;
    this.running = true;
    try {
      const gateways = [...this.opts.gateways()].filter((g) => this.reachable(g));
      const scrapes = await Promise.all(gateways.map(async (g) => [g.id, await this.scrape(g)] as const));
      const now = Date.now();
      const sums = new Map<
        string,
        { requests: number; errors5xx: number; buckets: Map<number, number>; inRotation: number; cold: number }
      >();
      const counters: GatewayCounters = { ejections: 0, failovers: 0 };
      let seconds = 0;
      for (const [id, scrape] of scrapes) {
        if (!scrape) continue;
        const before = this.previous.get(id);
        this.previous.set(id, scrape);
        if (!before) continue;
        seconds = Math.max(seconds, (scrape.t - before.t) / 1000);
        counters.ejections += increase(before.ejections, scrape.ejections);
        counters.failovers += increase(before.failovers, scrape.failovers);
        for (const [route, now] of scrape.routes) {
          const was = before.routes.get(route);
          const sum = sums.get(route) ?? { requests: 0, errors5xx: 0, buckets: new Map(), inRotation: 0, cold: 0 };
          sum.requests += increase(was?.requests ?? 0, now.requests);
          sum.errors5xx += increase(was?.errors5xx ?? 0, now.errors5xx);
          sum.cold += increase(was?.coldStarts ?? 0, now.coldStarts);
          sum.inRotation += now.inRotation;
          for (const [le, count] of now.buckets)
            sum.buckets.set(le, (sum.buckets.get(le) ?? 0) + increase(was?.buckets.get(le) ?? 0, count));
          sums.set(route, sum);
        }
      }
      for (const id of this.previous.keys()) if (!gateways.some((g) => g.id === id)) this.previous.delete(id);
      if (seconds <= 0) return;
      if (counters.ejections > 0 || counters.failovers > 0) this.opts.onCounters?.(counters);
      for (const [route, s] of sums) {
        if (s.cold > 0) this.opts.onColdStarts?.(route, s.cold);
        const p50 = quantile(0.5, s.buckets);
        const p99 = quantile(0.99, s.buckets);
        const points = this.series.get(route) ?? [];
        points.push({
          t: now,
          rps: round(s.requests / seconds),
          p50: p50 === undefined ? null : p50,
          p99: p99 === undefined ? null : p99,
          errors5xx: round(s.errors5xx / seconds),
          inRotation: s.inRotation,
          coldStarts: s.cold,
        });
        if (points.length > KEEP_POINTS) points.splice(0, points.length - KEEP_POINTS);
        this.series.set(route, points);
      }
    } finally {
      this.running = false;
    }
  }

  private async scrape(g: GatewayRecord): Promise<Scrape | undefined> {
    try {
      const res = await fetch(g.metrics as string, { signal: AbortSignal.timeout(this.opts.fetchTimeoutMs ?? 1_500) });
      if (!res.ok || !res.body) return undefined;
      const text = await readBounded(res.body, MAX_EXPOSITION_BYTES);
      return text === undefined ? undefined : totalsOf(parseSamples(text, (n) => WANTED.has(n)));
    } catch {
      return undefined;
    }
  }
}

/** Counter increase between two samples; a drop means the gateway restarted and counts from zero. */
function increase(before: number, now: number): number {
  return now >= before ? now - before : now;
}

const round = (n: number) => Math.round(n * 100) / 100;

async function readBounded(body: ReadableStream<Uint8Array>, max: number): Promise<string | undefined> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.length;
    if (size > max) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export function totalsOf(samples: Sample[], t = Date.now()): Scrape {
  const routes = new Map<string, RouteTotals>();
  const of = (route: string) => {
    let r = routes.get(route);
    if (!r) routes.set(route, (r = { requests: 0, errors5xx: 0, buckets: new Map(), inRotation: 0, coldStarts: 0 }));
    return r;
  };
  let ejections = 0;
  let failovers = 0;
  for (const s of samples) {
    const route = s.labels.route;
    switch (s.name) {
      case 'allegra_gateway_requests_total':
        if (!route || route === '-') break;
        of(route).requests += s.value;
        if (s.labels.code?.startsWith('5')) of(route).errors5xx += s.value;
        break;
      case 'allegra_gateway_request_duration_seconds_bucket': {
        if (!route || route === '-') break;
        const le = s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(s.labels.le);
        if (!Number.isNaN(le)) of(route).buckets.set(le, (of(route).buckets.get(le) ?? 0) + s.value);
        break;
      }
      case 'allegra_gateway_upstreams_healthy':
        if (route) of(route).inRotation += s.value;
        break;
      case 'allegra_gateway_cold_start_seconds_count':
        if (route) of(route).coldStarts += s.value;
        break;
      case 'allegra_gateway_ejections_total':
        ejections += s.value;
        break;
      case 'allegra_gateway_retries_total':
        failovers += s.value;
        break;
    }
  }
  return { t, routes, ejections, failovers };
}
