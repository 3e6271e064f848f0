/** Starts a set of targets side by side (gateway first: it decides the Host header), validates them. */
import { checkInterrupted, httpOnce, oneLine } from '../lib/proc.js';
import type { TargetInfo } from '../lib/report.js';
import { SMALL_BODY } from './scenarios.js';
import { Unavailable } from './targets.js';
import type { RunningTarget, TargetContext, TargetSpec } from './types.js';

export interface LineupEntry {
  spec: TargetSpec;
  running?: RunningTarget;
  error?: string;
}

export interface Lineup {
  host: string;
  entries: LineupEntry[];
  info(): TargetInfo[];
  stop(): Promise<void>;
}

/** One GET of each size and one POST through the target, checking status and body sizes. */
export async function validateTarget(url: string, host: string): Promise<void> {
  const checks: [string, string, number, Buffer | undefined][] = [
    ['GET', '/', SMALL_BODY.length, undefined],
    ['GET', '/16k', 16 * 1024, undefined],
    ['POST', '/upload', SMALL_BODY.length, Buffer.alloc(64 * 1024, 'x')],
  ];
  for (const [method, path, bytes, body] of checks) {
    const res = await httpOnce(`${url}${path}`, { host, method, ...(body ? { body } : {}), timeoutMs: 5000 });
    if (res.status !== 200 || res.bodyBytes !== bytes) {
      throw new Error(`${method} ${path}: HTTP ${res.status}, ${res.bodyBytes} B (expected 200, ${bytes} B)`);
    }
  }
}

export function pidsAlive(pids: number[]): boolean {
  return pids.every((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
}

export async function startLineup(
  specs: TargetSpec[],
  ctx: Omit<TargetContext, 'host'>,
  defaultHost: string,
  log: (msg: string) => void,
): Promise<Lineup> {
  const ordered = [...specs.filter((s) => s.id === 'gateway'), ...specs.filter((s) => s.id !== 'gateway')];
  const entries = new Map<string, LineupEntry>();
  let host = defaultHost;
  for (const spec of ordered) {
    checkInterrupted();
    const entry: LineupEntry = { spec };
    entries.set(spec.id, entry);
    try {
      const running = await spec.start({ ...ctx, host });
      entry.running = running;
      if (running.host) host = running.host;
      await validateTarget(running.url, host);
      log(`  started ${spec.label} at ${running.url} (pids ${running.pids.join(',') || '-'})`);
    } catch (err) {
      const msg = oneLine(err);
      entry.error = err instanceof Unavailable ? `unavailable: ${msg}` : `failed to start: ${msg}`;
      log(`  ${spec.label}: ${entry.error}`);
      if (entry.running) await entry.running.stop().catch(() => undefined);
      entry.running = undefined;
    }
  }
  const list = specs.map((s) => entries.get(s.id) as LineupEntry);
  return {
    host,
    entries: list,
    info: () =>
      list.map((e) => ({
        id: e.spec.id,
        label: e.spec.label,
        ...(e.running ? { detail: e.running.detail } : {}),
        ...(e.error ? { error: e.error } : {}),
      })),
    stop: async () => {
      for (const e of list) await e.running?.stop().catch(() => undefined);
    },
  };
}
