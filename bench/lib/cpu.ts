/** Which cores the load generator, the upstream replicas and the proxies run on. */
import os from 'node:os';
import { canPin } from './proc.js';

export interface CpuPlan {
  pinned: boolean;
  cores: number;
  loadgen: string | undefined;
  upstream: string | undefined;
  proxy: string | undefined;
  /** CPUs and worker count for the "one process per core" phase. */
  multi: string | undefined;
  multiWorkers: number;
  description: string;
}

function range(from: number, to: number): string {
  return from === to ? String(from) : `${from}-${to}`;
}

export function cpuPlan(): CpuPlan {
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  if (!canPin() || cores < 2) {
    return {
      pinned: false,
      cores,
      loadgen: undefined,
      upstream: undefined,
      proxy: undefined,
      multi: undefined,
      multiWorkers: cores,
      description: `not pinned (${canPin() ? `only ${cores} core` : 'taskset unavailable'}); all processes share all cores`,
    };
  }
  if (cores === 2) {
    return {
      pinned: true,
      cores,
      loadgen: '0',
      upstream: '1',
      proxy: '1',
      multi: '0,1',
      multiWorkers: 2,
      description:
        'load generator alone on core 0; the proxy under test and the 3 upstream replicas share core 1, so ' +
        '"direct" is the replica alone on that core (the real limit) and every proxy pays for its own CPU ' +
        'on the same core: Δ time/req = 1/rps − 1/rps(direct) is the core-time the proxy adds per request. ' +
        'Putting the replicas on core 0 instead would make core 0 (load generator + replica) the bottleneck ' +
        'for nginx and HAProxy and hide their differences. Multi-process phase: proxy workers on cores 0,1 ' +
        '(one per core), replicas on core 1, load generator on core 0.',
    };
  }
  return {
    pinned: true,
    cores,
    loadgen: '0',
    upstream: '1',
    proxy: '2',
    multi: range(2, cores - 1),
    multiWorkers: cores - 2,
    description: `load generator on core 0, upstream replicas on core 1, proxy under test on core 2; multi-process phase: proxy workers on cores ${range(2, cores - 1)}.`,
  };
}
