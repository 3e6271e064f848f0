/**
 * The hash of what an instance runs: its driver, command, environment, port, limits and artifact. The
 * registry's spec yields one; each quorum member reports the one of the spec its replicas run, so
 * `allegra verify` compares them without seeing the spec itself (its environment may hold secrets).
 */
import { canonicalJson } from './records.js';
import { sha256Hex } from './signing.js';
import type { InstanceSpec } from './types.js';

export function specHash(spec: Pick<InstanceSpec, 'driver' | 'cmd' | 'env' | 'port' | 'limits' | 'artifact'>): string {
  return sha256Hex(
    canonicalJson({
      driver: spec.driver,
      cmd: spec.cmd,
      env: spec.env,
      port: spec.port,
      limits: spec.limits ?? null,
      artifact: spec.artifact?.sha256 ?? null,
    }),
  );
}

/** What a member signs for `allegra verify`: the replicas of one instance it runs, for a verifier's nonce. */
export interface Attestation {
  nodeId: string;
  instanceId: string;
  nonce: string;
  at: number;
  replicas: Array<{ slot: number; version: number; healthy: boolean; artifact: string | null; specHash: string }>;
}
