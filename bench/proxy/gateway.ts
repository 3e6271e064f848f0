/**
 * The Allegra gateway target. Its starter, bench/targets/allegra.ts, is written by the gateway's
 * authors; it is loaded dynamically so the harness still runs (without this target) when it is absent.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkInterrupted, interrupted, registerCleanup, registerForeignPids } from '../lib/proc.js';
import type { TargetSpec } from './types.js';

/** The contract of bench/targets/allegra.ts. */
export interface AllegraTarget {
  url: string;
  /** Host header to send */
  host: string;
  pids: number[];
  stop(): Promise<void>;
}
export type StartAllegraGateway = (opts: {
  upstreams: string[];
  processes?: number;
  cpus?: string;
  accessLog?: boolean;
  /** The CLI to run (another build's dist/cli/main.js); default: this build's. */
  cli?: string;
}) => Promise<AllegraTarget>;

const MODULE = new URL('../targets/allegra.js', import.meta.url);

export type GatewayLoad = { ok: true; start: StartAllegraGateway } | { ok: false; reason: string };

export async function loadGateway(): Promise<GatewayLoad> {
  const file = fileURLToPath(MODULE);
  if (!existsSync(file))
    return { ok: false, reason: 'dist/bench/targets/allegra.js is missing (bench/targets/allegra.ts not written or not built)' };
  try {
    const mod = (await import(MODULE.href)) as { startAllegraGateway?: unknown };
    if (typeof mod.startAllegraGateway !== 'function') {
      return { ok: false, reason: `${file} does not export startAllegraGateway()` };
    }
    return { ok: true, start: mod.startAllegraGateway as StartAllegraGateway };
  } catch (err) {
    return { ok: false, reason: `${file} failed to load: ${(err as Error).message}` };
  }
}

/** Starts the gateway and returns it plus the Host header it routes on. */
export async function startGateway(
  start: StartAllegraGateway,
  opts: { upstreams: string[]; processes: number; cpus: string | undefined; accessLog: boolean; cli?: string },
): Promise<AllegraTarget> {
  checkInterrupted();
  const gw = await start({
    upstreams: opts.upstreams,
    processes: opts.processes,
    accessLog: opts.accessLog,
    ...(opts.cli ? { cli: opts.cli } : {}),
    ...(opts.cpus !== undefined ? { cpus: opts.cpus } : {}),
  });
  if (interrupted()) {
    await gw.stop();
    checkInterrupted();
  }
  // Ctrl-C: stop it through its own stop() (registry, temp dir); SIGKILL its PIDs as a last resort.
  const unregisterPids = registerForeignPids(gw.pids);
  const unregisterStop = registerCleanup(() => gw.stop());
  return {
    ...gw,
    stop: async () => {
      unregisterStop();
      await gw.stop();
      unregisterPids();
    },
  };
}

/**
 * The production gateway (access log on), the same with the access log off (`gateway-nolog`), or another
 * build's gateway (`gateway-baseline`, access log on) when `baseline` names that build's directory.
 */
export function gatewaySpec(start: StartAllegraGateway, accessLog = true, baseline?: string): TargetSpec {
  const cli = baseline ? join(baseline, 'dist', 'cli', 'main.js') : undefined;
  return {
    id: baseline ? 'gateway-baseline' : accessLog ? 'gateway' : 'gateway-nolog',
    label: baseline ? 'Allegra gateway, baseline build' : accessLog ? 'Allegra gateway' : 'Allegra gateway, access log off',
    multiWorker: true,
    start: async (ctx) => {
      if (cli && !existsSync(cli)) throw new Error(`baseline build not found: ${cli} (build it first)`);
      const gw = await startGateway(start, {
        upstreams: ctx.upstreams,
        processes: ctx.workers,
        cpus: ctx.cpus,
        accessLog,
        ...(cli ? { cli } : {}),
      });
      return {
        url: gw.url,
        host: gw.host,
        pids: gw.pids,
        detail: `${ctx.workers} process${ctx.workers > 1 ? 'es' : ''}; route lookup + balancing + metrics + undici forward${accessLog ? ' + access log' : ''}, 3 replicas${baseline ? `; build in ${baseline}` : ''}`,
        stop: gw.stop,
      };
    },
  };
}
