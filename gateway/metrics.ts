/** Prometheus metrics of a gateway (prom-client), exposed on the admin port. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'allegra_gateway_requests_total',
    help: 'Requests answered, by status code',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'allegra_gateway_request_duration_seconds',
    help: 'Time from request to response headers',
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
    help: 'Requests retried on another replica',
    registers: [this.registry],
  });
  readonly ejections = new Counter({
    name: 'allegra_gateway_ejections_total',
    help: 'Replicas ejected after failures',
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({ name: 'allegra_gateway_in_flight', help: 'Requests being proxied', registers: [this.registry] });
  readonly routes = new Gauge({ name: 'allegra_gateway_routes', help: 'Routes in the route table', registers: [this.registry] });
  /** Pre-bound children so the hot path does no label lookup. */
  private readonly byCode = new Map<number, { inc(): void }>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'allegra_gateway_' });
  }

  count(status: number): void {
    let c = this.byCode.get(status);
    if (!c) this.byCode.set(status, (c = this.requests.labels(String(status))));
    c.inc();
  }
}
