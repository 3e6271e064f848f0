/**
 * `allegra gateway --config FILE`: limits, resilience policy and health checks as JSON, validated here so
 * a typo fails at start with the offending key named instead of being ignored.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { GatewayOptions } from './server.js';

const ms = z.number().int().min(1);
const schema = z
  .object({
    h2c: z.boolean(),
    proxyProtocol: z.boolean(),
    trustedProxies: z.array(z.string()),
    maxConnections: z.number().int().min(1),
    maxHeaderBytes: z.number().int().min(1024),
    headersTimeoutMs: ms,
    requestTimeoutMs: ms,
    idleTimeoutMs: ms,
    drainMs: z.number().int().min(0),
    accessLog: z.boolean(),
    tls13Only: z.boolean(),
    http2: z
      .object({
        maxConcurrentStreams: z.number().int().min(1).max(1_000),
        maxSessionMemoryMb: z.number().int().min(1).max(256),
        resetBurst: z.number().int().min(1),
      })
      .partial()
      .strict(),
    readiness: z.object({ maxRegistryStalenessMs: ms }).partial().strict(),
    activator: z
      .object({
        maxPerInstance: z.number().int().min(0).max(100_000),
        maxTotal: z.number().int().min(0).max(1_000_000),
        timeoutMs: ms,
      })
      .partial()
      .strict(),
    loadTickMs: z.number().int().min(100).max(60_000),
    healthCheck: z.union([
      z.literal(false),
      z
        .object({
          intervalMs: ms,
          timeoutMs: ms,
          path: z.string().startsWith('/'),
          unhealthyThreshold: z.number().int().min(1),
          healthyThreshold: z.number().int().min(1),
        })
        .partial()
        .strict(),
    ]),
    policy: z
      .object({
        maxBodyBytes: z.number().int().min(0),
        timeoutMs: ms,
        tryTimeoutMs: ms,
        retries: z.number().int().min(0).max(10),
        maxInFlightPerRoute: z.number().int().min(1),
        maxInFlightPerReplica: z.number().int().min(1),
        queueTimeoutMs: z.number().int().min(0),
        maxQueuedPerRoute: z.number().int().min(0),
        maxClientShare: z.number().gt(0).max(1),
        minBodyBytesPerSec: z.number().min(0),
        bodyRateWindowMs: ms,
        retryBudgetRatio: z.number().min(0).max(1),
        retryBudgetMin: z.number().int().min(0),
        consecutiveFailures: z.number().int().min(1),
        baseEjectionMs: ms,
        maxEjectionMs: ms,
      })
      .partial()
      .strict(),
  })
  .partial()
  .strict();

export type GatewayFileConfig = z.infer<typeof schema>;

export function loadGatewayConfig(path: string): Partial<GatewayOptions> {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read gateway config ${path}: ${(err as Error).message}`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`gateway config ${path}: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  const { accessLog, ...rest } = parsed.data;
  return { ...rest, ...(accessLog === false ? { accessLog: null } : {}) };
}
