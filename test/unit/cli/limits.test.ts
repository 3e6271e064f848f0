import { describe, expect, it } from 'vitest';
import { limitsFrom } from '../../../cli/instance-commands.js';
import { createInstanceRequest, effectiveLimits, instanceSpec, REPLICA_LIMITS } from '../../../protocol/schemas.js';
import { newInstanceSpec } from '../../../protocol/types.js';

describe('replica limits', () => {
  it('turns --memory/--pids/--cpu-shares into the spec’s limits, and nothing when none is given', () => {
    expect(limitsFrom({ memory: '128', pids: '64', cpuShares: '512' })).toEqual({ limits: { memoryMb: 128, pids: 64, cpuShares: 512 } });
    expect(limitsFrom({ memory: '256' })).toEqual({ limits: { memoryMb: 256 } });
    expect(limitsFrom({})).toEqual({});
  });

  it('refuses values outside the network’s bounds with the flag and the range (usage error, exit 2)', () => {
    expect(() => limitsFrom({ memory: '99999999' })).toThrow(/--memory expects a whole number from 32 to 16384/);
    expect(() => limitsFrom({ pids: '1.5' })).toThrow(/--pids/);
    expect(() => limitsFrom({ cpuShares: '0' })).toThrow(expect.objectContaining({ exitCode: 2 }));
  });

  it('bounds limits in the RPC request and the registry record too, and fills defaults', () => {
    expect(createInstanceRequest.safeParse({ name: 'a', limits: { memoryMb: REPLICA_LIMITS.memoryMb.max + 1 } }).success).toBe(false);
    expect(createInstanceRequest.safeParse({ name: 'a', limits: { swap: 1 } }).success).toBe(false);
    expect(createInstanceRequest.parse({ name: 'a', limits: { pids: 100 } }).limits).toEqual({ pids: 100 });
    const spec = newInstanceSpec({ id: 'i-1', name: 'a', owner: 'a'.repeat(64), limits: { memoryMb: 64 } });
    expect(instanceSpec.parse(spec).limits).toEqual({ memoryMb: 64 });
    expect(effectiveLimits({ memoryMb: 64 })).toEqual({ memoryMb: 64, pids: 1024, cpuShares: 1024 });
    expect(effectiveLimits(undefined)).toEqual({ memoryMb: 512, pids: 1024, cpuShares: 1024 });
  });
});
