/**
 * Usage records (`usage/<instance>/<node>`): what one node served for one instance, measured and signed by
 * that node. Totals only grow; `seq` grows with every new record, so of two records of a node the higher
 * `seq` supersedes, and what a payment contract owes for a period is the difference of two records.
 */
import { z } from 'zod';
import type { RecordSignature } from './records.js';

export interface UsageRecord {
  instanceId: string;
  nodeId: string;
  /** HTTP requests (HTTP/1 requests and HTTP/2 streams) that reached the instance's replicas on this node. */
  requests: number;
  /** Bytes from clients to the replicas, and back. */
  bytesIn: number;
  bytesOut: number;
  /** CPU time of the replicas. */
  cpuSeconds: number;
  /** Time replicas ran, summed over replicas (replica-hours × 3600). */
  replicaSeconds: number;
  /** When this node began measuring the instance. */
  since: number;
  updatedAt: number;
  seq: number;
  signature?: RecordSignature;
}

export const usageRecord = z.object({
  instanceId: z.string(),
  nodeId: z.string(),
  requests: z.number().min(0),
  bytesIn: z.number().min(0),
  bytesOut: z.number().min(0),
  cpuSeconds: z.number().min(0),
  replicaSeconds: z.number().min(0),
  since: z.number(),
  updatedAt: z.number(),
  seq: z.number().int().min(0),
  signature: z.object({ key: z.string(), sig: z.string() }).optional(),
});
