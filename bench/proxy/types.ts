/** Shared shapes between the harness phases, the targets and the load generators. */

export interface TargetContext {
  /** Base URLs of the upstream replicas, e.g. http://127.0.0.1:41001. */
  upstreams: string[];
  /** Host header every load sends (the gateway routes on it; the others ignore it). */
  host: string;
  /** taskset CPU list for the target's processes (undefined: not pinned). */
  cpus: string | undefined;
  /** Worker processes / threads the target may use. */
  workers: number;
  /** Private temp dir of this run (configs, pid files, logs). */
  tmpDir: string;
}

export interface RunningTarget {
  url: string;
  /** Host header this target needs (only the gateway has one); all loads then send it. */
  host?: string;
  pids: number[];
  /** Free-form detail shown in the output (config summary, version…). */
  detail: string;
  stop(): Promise<void>;
}

export interface TargetSpec {
  id: string;
  label: string;
  /** True when the target can run with `workers > 1`. */
  multiWorker: boolean;
  start(ctx: TargetContext): Promise<RunningTarget>;
}

/** Latency percentiles in milliseconds. */
export interface Percentiles {
  p50: number;
  p75: number;
  p90: number;
  p99: number;
  p999: number;
  p9999: number;
  max: number;
}

export interface LoadResult {
  requests: number;
  durationSec: number;
  rps: number;
  latency: Percentiles;
  /** Socket errors and timeouts. */
  errors: number;
  /** Responses whose status is not 2xx. */
  non2xx: number;
  /** Epoch ms (performance.timeOrigin-based) of every failed request, when requested. */
  errorTimes?: number[];
  startedAt?: number;
  endedAt?: number;
}
