/**
 * The spare-worker pool with a fake Worker (the real one boots a Node environment): which spare a
 * replica gets, and the deadline that protects the host from an app whose warm-up request never ends.
 */
import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const workers: FakeWorker[] = [];

class FakeWorker extends EventEmitter {
  readonly posted: { type: string; artifactKey?: string; request?: boolean }[] = [];
  terminated = false;
  /** When false, a warm-up is never answered (an app looping on GET /). */
  answersWarmup = true;
  constructor() {
    super();
    workers.push(this);
    queueMicrotask(() => this.emit('message', { type: 'booted' }));
  }
  postMessage(m: { type: string; artifactKey?: string; request?: boolean }): void {
    this.posted.push(m);
    if (m.type === 'warmup' && this.answersWarmup)
      queueMicrotask(() => this.emit('message', { type: 'warmed', artifactKey: m.artifactKey }));
  }
  terminate(): Promise<number> {
    this.terminated = true;
    queueMicrotask(() => this.emit('exit', 1));
    return Promise.resolve(1);
  }
  ref(): void {}
  unref(): void {}
}

vi.mock('node:worker_threads', () => ({ Worker: FakeWorker }));
const { WorkerPool } = await import('../../../quorum-agent/wasm/worker-pool.js');

const flush = async () => {
  for (let i = 0; i < 10; i++) await Promise.resolve();
};

describe('WorkerPool', () => {
  beforeEach(() => {
    workers.length = 0;
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('keeps spares booted and warmed for the last artifact, and hands out a warmed one', async () => {
    const pool = new WorkerPool(2);
    await flush();
    expect(workers.length).toBe(2);
    expect(pool.readySpares).toBe(2);
    pool.warmFor('app-a', 'file:///bindings.js', {});
    await flush();
    expect(workers.every((w) => w.posted.some((m) => m.type === 'warmup' && m.artifactKey === 'app-a' && m.request === true))).toBe(true);
    expect(pool.readySpares).toBe(2);
    const taken = await pool.take();
    expect(workers.includes(taken as unknown as FakeWorker)).toBe(true);
    expect(pool.readySpares).toBe(1);
    // The replacement boots a moment later, not during the new replica's first requests.
    expect(workers.length).toBe(2);
    await vi.advanceTimersByTimeAsync(250);
    await flush();
    expect(workers.length).toBe(3);
    expect(pool.readySpares).toBe(2);
    await pool.close();
  });

  it('terminates a spare whose warm-up request does not finish, and warms that app without the request afterwards', async () => {
    const pool = new WorkerPool(1);
    await flush();
    const stuck = workers[0]!;
    stuck.answersWarmup = false;
    pool.warmFor('looping-app', 'file:///bindings.js', {});
    await flush();
    expect(pool.readySpares).toBe(0);
    await vi.advanceTimersByTimeAsync(5_001);
    await flush();
    expect(stuck.terminated).toBe(true);
    const replacement = workers[1]!;
    expect(replacement).toBeDefined();
    await flush();
    const warmups = replacement.posted.filter((m) => m.type === 'warmup');
    expect(warmups.at(-1)).toMatchObject({ artifactKey: 'looping-app', request: false });
    expect(pool.readySpares).toBe(1);
    // A stuck spare is never handed to a replica: take() got the replacement.
    expect(await pool.take()).toBe(replacement);
    await pool.close();
  });
});
