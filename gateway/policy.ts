/**
 * Gateway limits and resilience settings. Gateway-wide defaults come from options; a route may override
 * the per-request ones through its `policy` in the registry.
 */
import type { RoutePolicy } from '../protocol/types.js';

export interface GatewayPolicy {
  /** Largest request body accepted, in bytes (413 beyond). */
  maxBodyBytes: number;
  /** Whole-request deadline until the response starts, across retries (504 beyond). */
  timeoutMs: number;
  /** Deadline for one attempt to receive response headers (then the next replica is tried, if allowed). */
  tryTimeoutMs: number;
  /** Extra attempts on other replicas. */
  retries: number;
  /** Requests in flight per route before new ones queue. */
  maxInFlightPerRoute: number;
  /** Requests in flight per replica before it counts as full. */
  maxInFlightPerReplica: number;
  /** How long a request may wait in a full route's queue before 503 (never past its own deadline). */
  queueTimeoutMs: number;
  /** Requests that may wait in one route's queue; beyond that they are refused at once. */
  maxQueuedPerRoute: number;
  /**
   * Share (0–1] of a route's in-flight limit, and of each replica's, that one client address may hold
   * (queued requests count), so one client cannot take a route or a replica from everyone else.
   */
  maxClientShare: number;
  /**
   * Request bodies must arrive at this rate, averaged over windows of `bodyRateWindowMs` (the first
   * window is the grace period); slower ones are answered 408 and their connection closed.
   */
  minBodyBytesPerSec: number;
  bodyRateWindowMs: number;
  /** Retries in flight may not exceed this fraction of active requests… */
  retryBudgetRatio: number;
  /** …or this floor, whichever is larger, so that a few simultaneous failures at low load still retry. */
  retryBudgetMin: number;
  /** Passive outlier detection: consecutive failed attempts (5xx or connect errors) that eject a replica. */
  consecutiveFailures: number;
  /** First ejection lasts this long; each further ejection doubles it, up to maxEjectionMs. */
  baseEjectionMs: number;
  maxEjectionMs: number;
}

export const DEFAULT_POLICY: GatewayPolicy = {
  maxBodyBytes: 1024 * 1024 * 1024 * 4,
  timeoutMs: 60_000,
  tryTimeoutMs: 30_000,
  retries: 2,
  maxInFlightPerRoute: 10_000,
  maxInFlightPerReplica: 1_000,
  queueTimeoutMs: 1_000,
  maxQueuedPerRoute: 1_000,
  maxClientShare: 0.5,
  minBodyBytesPerSec: 1_024,
  bodyRateWindowMs: 10_000,
  retryBudgetRatio: 0.2,
  retryBudgetMin: 10,
  consecutiveFailures: 5,
  baseEjectionMs: 2_000,
  maxEjectionMs: 60_000,
};

/**
 * The settings one request runs with: the gateway's, tightened by its route's policy. Route policies come
 * from the instance owner's requests (tenant input), so a route may lower a limit, never raise one.
 */
export interface RequestPolicy {
  maxBodyBytes: number;
  timeoutMs: number;
  tryTimeoutMs: number;
  retries: number;
  maxInFlight: number;
  stickyCookie: string | undefined;
  stickyHeader: string | undefined;
  /** The gateway gives a client without the sticky cookie one (it owns the cookie). */
  stickyInsert: boolean;
}

export function requestPolicy(g: GatewayPolicy, route: RoutePolicy | undefined): RequestPolicy {
  const tighter = (own: number | undefined, limit: number) => (own === undefined ? limit : Math.min(own, limit));
  const timeoutMs = tighter(route?.timeoutMs, g.timeoutMs);
  return {
    maxBodyBytes: tighter(route?.maxBodyBytes, g.maxBodyBytes),
    timeoutMs,
    tryTimeoutMs: Math.min(tighter(route?.tryTimeoutMs, g.tryTimeoutMs), timeoutMs),
    retries: tighter(route?.retries, g.retries),
    maxInFlight: tighter(route?.maxInFlight, g.maxInFlightPerRoute),
    stickyCookie: route?.sticky?.cookie,
    stickyHeader: route?.sticky?.header?.toLowerCase(),
    stickyInsert: route?.sticky?.insert === true && route.sticky.cookie !== undefined,
  };
}
