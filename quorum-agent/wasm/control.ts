/**
 * The wasm host's control interface: JSON messages over the IPC channel of the process that started it
 * (the agent). Each request carries an id; each reply names it. Requests are validated here, since the
 * host must not trust a malformed message to be harmless.
 */
import { z } from 'zod';
import { replicaLimitsSchema } from './limits.js';

export const loadSchema = z
  .object({
    replicaId: z.string().min(1).max(200),
    artifactDir: z.string().min(1).max(4096),
    socketPath: z.string().min(1).max(107),
    logFile: z.string().min(1).max(4096),
    env: z
      .record(z.string().max(256), z.string().max(64 * 1024))
      .refine((e) => Object.keys(e).length <= 256, 'at most 256 env bindings')
      .optional(),
    limits: replicaLimitsSchema.partial().optional(),
    mode: z.enum(['per-replica', 'per-request']).optional(),
    eager: z.boolean().optional(),
  })
  .strict();

export const controlRequestSchema = z.discriminatedUnion('op', [
  z.object({ id: z.number().int(), op: z.literal('load'), load: loadSchema }).strict(),
  z.object({ id: z.number().int(), op: z.literal('unload'), replicaId: z.string().min(1).max(200) }).strict(),
  z.object({ id: z.number().int(), op: z.literal('health') }).strict(),
  z.object({ id: z.number().int(), op: z.literal('stats') }).strict(),
]);

export type ControlRequest = z.infer<typeof controlRequestSchema>;

export type ControlReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; code: string; error: string };

/** The first message the host sends: it is ready for requests. */
export interface HostReady {
  type: 'ready';
  pid: number;
}
