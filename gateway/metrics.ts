/** Prometheus metrics of a gateway (prom-client), exposed on the admin port. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineMetrics } from './engine.js';

export class GatewayMetrics implements EngineMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'allegra_gateway_requests_total',
    help: 'Requests answered, by route (instance name, or "-" when no route matched) and status code',
    labelNames: ['route', 'code'] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'allegra_gateway_request_duration_seconds',
    help: 'Time from request to the end of the response, by route',
    labelNames: ['route'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly upstreamErrors = new Counter({
    name: 'allegra_gateway_upstream_errors_total',
    help: 'Failed upstream attempts, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly retries = new Counter({
    name: 'allegra_gateway_retries_total',
    help: 'Attempts retried on another replica',
    registers: [this.registry],
  });
  readonly ejections = new Counter({
    name: 'allegra_gateway_ejections_total',
    help: 'Replicas ejected by outlier detection',
    registers: [this.registry],
  });
  readonly routes = new Gauge({ name: 'allegra_gateway_routes', help: 'Routes in the route table', registers: [this.registry] });
  readonly upstreamsHealthy = new Gauge({
    name: 'allegra_gateway_upstreams_healthy',
    help: 'Replicas in rotation, by route',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  readonly upstreamsDown = new Gauge({
    name: 'allegra_gateway_upstreams_down',
    help: 'Replicas out of rotation after failing active health checks, by route',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({ name: 'allegra_gateway_in_flight', help: 'Requests being proxied', registers: [this.registry] });
  readonly clientAborts = new Counter({
    name: 'allegra_gateway_client_aborts_total',
    help: 'Requests whose client went away before the response was complete, by phase (queued, waiting for the replica, streaming the response)',
    labelNames: ['phase'] as const,
    registers: [this.registry],
  });
  readonly refusals = new Counter({
    name: 'allegra_gateway_refusals_total',
    help: 'Requests refused to protect the gateway or other clients, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly h2Abuse = new Counter({
    name: 'allegra_gateway_h2_sessions_closed_total',
    help: 'HTTP/2 connections closed for abuse, by reason (rapid-reset: streams reset faster than completed; flood: nghttp2 limits tripped)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly tunnelsOpen = new Gauge({
    name: 'allegra_gateway_tunnels_open',
    help: 'Open WebSocket (upgrade) tunnels',
    registers: [this.registry],
  });
  readonly tunnelBytes = new Counter({
    name: 'allegra_gateway_tunnel_bytes_total',
    help: 'Bytes relayed through upgrade tunnels, by direction (up: client to replica)',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  readonly routeInFlight = new Gauge({
    name: 'allegra_gateway_route_in_flight',
    help: 'Requests admitted by the route gate and not finished, by route',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  readonly routeQueued = new Gauge({
    name: 'allegra_gateway_route_queued',
    help: 'Requests waiting for a slot of their route, by route',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  readonly upstreamInFlight = new Gauge({
    name: 'allegra_gateway_upstream_in_flight',
    help: 'Attempts in flight per replica',
    labelNames: ['route', 'upstream'] as const,
    registers: [this.registry],
  });
  readonly upstreamLatency = new Gauge({
    name: 'allegra_gateway_upstream_latency_seconds',
    help: "The balancer's latency estimate (peak EWMA) per replica: slow replicas show here",
    labelNames: ['route', 'upstream'] as const,
    registers: [this.registry],
  });
  readonly upstreamWeight = new Gauge({
    name: 'allegra_gateway_upstream_weight_ratio',
    help: 'Effective weight over full weight per replica: below 1 while a new or returning (cold) replica warms up in slow start',
    labelNames: ['route', 'upstream'] as const,
    registers: [this.registry],
  });
  readonly upstreamEjected = new Gauge({
    name: 'allegra_gateway_upstream_ejected',
    help: '1 while a replica is ejected by outlier detection',
    labelNames: ['route', 'upstream'] as const,
    registers: [this.registry],
  });
  readonly upstreamConnections = new Gauge({
    name: 'allegra_gateway_upstream_connections',
    help: 'Connections open from this gateway to each replica endpoint',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });
  /** Pre-bound children so the hot path does no label hashing. */
  private readonly counters = new Map<string, { inc(): void }>();
  private readonly histograms = new Map<string, { observe(v: number): void }>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'allegra_gateway_' });
  }

  count(route: string, status: number): void {
    const key = `${route} ${status}`;
    let c = this.counters.get(key);
    if (!c) this.counters.set(key, (c = this.requests.labels(route, String(status))));
    c.inc();
  }

  clientAbort(phase: string): void {
    this.clientAborts.labels(phase).inc();
  }

  refusal(reason: string): void {
    this.refusals.labels(reason).inc();
  }

  upstreamError(reason: string): void {
    this.upstreamErrors.labels(reason).inc();
  }

  retry(): void {
    this.retries.inc();
  }

  observe(route: string, seconds: number): void {
    let h = this.histograms.get(route);
    if (!h) this.histograms.set(route, (h = this.duration.labels(route)));
    h.observe(seconds);
  }
}
