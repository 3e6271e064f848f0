/** "Direct": the load generator talks to replica 0 itself — the limit every proxy is compared with. */
import type { TargetSpec } from './types.js';

export const directTarget: TargetSpec = {
  id: 'direct',
  label: 'direct (no proxy)',
  multiWorker: false,
  start: async (ctx) => {
    const url = ctx.upstreams[0];
    if (!url) throw new Error('no upstream replica');
    return { url, pids: [], detail: 'load generator → replica 0', stop: async () => undefined };
  },
};
