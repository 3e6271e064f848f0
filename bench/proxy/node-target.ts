/** Starts one of the Node peer proxies (see node-child.ts) as its own pinned process. */
import { fileURLToPath } from 'node:url';
import { getFreePort, spawnProc, stopProc, waitForLine } from '../lib/proc.js';
import type { RunningTarget, TargetContext } from './types.js';

const CHILD = fileURLToPath(new URL('./node-child.js', import.meta.url));

export async function nodeProxyTarget(
  kind: 'minimal' | 'http-proxy' | 'fastify',
  ctx: TargetContext,
  detail: string,
): Promise<RunningTarget> {
  const port = await getFreePort();
  const proc = spawnProc({
    name: `node proxy ${kind}`,
    cmd: process.execPath,
    args: [CHILD, '--kind', kind, '--port', String(port), '--upstreams', ctx.upstreams.join(',')],
    cpus: ctx.cpus,
    env: { ...process.env, NODE_ENV: 'production' },
  });
  try {
    await waitForLine(proc, 'READY', 15_000);
  } catch (err) {
    await stopProc(proc);
    throw err;
  }
  return {
    url: `http://127.0.0.1:${port}`,
    pids: [proc.pid],
    detail: `1 process; ${detail}`,
    stop: () => stopProc(proc),
  };
}
