import { describe, expect, it } from 'vitest';
import { newInstanceSpec, type ScaleRecord } from '../../../protocol/types.js';
import { autoscaled, desiredReplicas, scalesToZero } from '../../../router/scale.js';

const decision = (desired: number): ScaleRecord => ({
  instanceId: 'i-1',
  desired,
  panic: false,
  stableConcurrency: 1,
  panicConcurrency: 1,
  reason: 'test',
  updatedAt: 0,
});

describe('replica counts under the autoscaler', () => {
  it('follow the autoscaler within the bounds of an ordinary instance', () => {
    const spec = newInstanceSpec({ id: 'i-1', name: 'app', owner: 'o'.repeat(64), replicas: { min: 0, max: 4 } });
    expect(autoscaled(spec)).toBe(true);
    expect(scalesToZero(spec)).toBe(true);
    expect(desiredReplicas(spec, decision(3))).toBe(3);
    expect(desiredReplicas(spec, decision(9))).toBe(4);
    expect(desiredReplicas(spec, undefined)).toBe(0);
  });

  it('leave a volume instance at its one slot, whatever a decision or its bounds say', () => {
    // Bounds a volume cannot get through create or scale, as a record written by hand could carry them.
    const spec = newInstanceSpec({ id: 'i-1', name: 'notes', owner: 'o'.repeat(64), replicas: { min: 0, max: 4 }, volume: true });
    expect(autoscaled(spec)).toBe(false);
    expect(scalesToZero(spec)).toBe(false);
    expect(desiredReplicas({ ...spec, replicas: { min: 1, max: 4 } }, decision(3))).toBe(1);
  });
});
