import { describe, expect, it } from 'vitest';
import { SerialPass } from '../../quorum-agent/serial-pass.js';
import { waitFor } from '../helpers/tmp.js';

describe('SerialPass', () => {
  it('never overlaps passes and folds a burst of requests into one more pass', async () => {
    let running = 0;
    let maxRunning = 0;
    let passes = 0;
    let release: () => void = () => {};
    const runner = new SerialPass(
      async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        passes++;
        await new Promise<void>((r) => (release = r));
        running--;
      },
      () => {},
    );
    runner.request();
    for (let i = 0; i < 10; i++) runner.request();
    release();
    await waitFor(() => passes === 2, { what: 'the follow-up pass' });
    release();
    await new Promise((r) => setTimeout(r, 20));
    expect(passes).toBe(2);
    expect(maxRunning).toBe(1);
  });

  it('reports a failing pass and keeps working; stops when told', async () => {
    const errors: unknown[] = [];
    let passes = 0;
    const runner = new SerialPass(
      async () => {
        passes++;
        throw new Error('boom');
      },
      (e) => errors.push(e),
    );
    runner.request();
    await waitFor(() => errors.length === 1, { what: 'the error' });
    runner.request();
    await waitFor(() => errors.length === 2, { what: 'a second pass' });
    runner.stop();
    runner.request();
    await new Promise((r) => setTimeout(r, 20));
    expect(passes).toBe(2);
  });
});
