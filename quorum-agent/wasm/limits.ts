/** Per-replica limits of the wasm host, with the defaults used when the caller gives none. */
import { z } from 'zod';

export const replicaLimitsSchema = z
  .object({
    /** Linear memory of the instance, in bytes (the module's maximum is set to it). */
    memoryBytes: z
      .number()
      .int()
      .min(16 * 1024 * 1024)
      .max(4 * 1024 * 1024 * 1024 - 65536),
    /** Wall-clock time one request may run inside the guest before its worker is terminated. */
    timeoutMs: z.number().int().min(10).max(300_000),
    maxRequestBytes: z
      .number()
      .int()
      .min(0)
      .max(256 * 1024 * 1024),
    maxResponseBytes: z
      .number()
      .int()
      .min(1024)
      .max(256 * 1024 * 1024),
    /** Requests waiting for the replica's worker beyond the one running; more are refused with 503. */
    maxQueue: z.number().int().min(0).max(10_000),
    maxLogBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  })
  .strict();

export type ReplicaLimits = z.infer<typeof replicaLimitsSchema>;

export const DEFAULT_LIMITS: ReplicaLimits = {
  memoryBytes: 128 * 1024 * 1024,
  timeoutMs: 5_000,
  maxRequestBytes: 1024 * 1024,
  maxResponseBytes: 8 * 1024 * 1024,
  maxQueue: 64,
  maxLogBytes: 64 * 1024 * 1024,
};

export function resolveLimits(partial: Partial<ReplicaLimits> | undefined): ReplicaLimits {
  return replicaLimitsSchema.parse({ ...DEFAULT_LIMITS, ...partial });
}
