/**
 * One point of an instance's traffic plot, as the agent's metrics sampler makes it and the UI draws it
 * (`GET /v1/ui/instances/NAME/metrics`). Kept free of imports: the browser bundle type-checks it too.
 */
export interface MetricPoint {
  /** Milliseconds since the epoch. */
  t: number;
  rps: number;
  /** Seconds; null when no request finished in the interval. */
  p50: number | null;
  p99: number | null;
  errors5xx: number;
  /** Replicas in rotation at the gateways (summed). */
  inRotation: number;
  /** Cold starts (requests held while the instance woke) in the interval. */
  coldStarts: number;
}
