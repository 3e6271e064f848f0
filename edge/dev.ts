/**
 * `allegra edge dev`: the Workers entry run locally in workerd (through Miniflare, the library `wrangler dev`
 * runs on), fed from a real registry by the bridge. The Worker is bundled with esbuild, as wrangler would;
 * its Durable Objects live in memory. Used by the CLI, the proxy-semantics suite and the edge benchmark.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { Miniflare } from 'miniflare';
import type { Logger } from 'pino';
import type { Registry } from '../protocol/registry.js';
import { EdgeBridge } from './bridge.js';

export interface EdgeDevOptions {
  registry: Registry;
  /** Base URLs of the Node gateways the edge forwards to. */
  origins: string[];
  /** The secret the origins accept in x-allegra-edge (their `edgeTokenFile`). */
  edgeToken: string;
  host?: string;
  port?: number;
  shards?: number;
  log: Logger;
}

export interface EdgeDev {
  url: string;
  bridge: EdgeBridge;
  stop(): Promise<void>;
}

/** Matches wrangler.toml's compatibility_date. */
export const COMPATIBILITY_DATE = '2026-04-01';

/** Bundles the Worker (edge/worker.ts, or its build next to this file) into one ES module. */
export async function bundleWorker(outDir: string): Promise<string> {
  const built = fileURLToPath(new URL('./worker.js', import.meta.url));
  const entry = existsSync(built) ? built : fileURLToPath(new URL('./worker.ts', import.meta.url));
  const outfile = join(outDir, 'worker.mjs');
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    mainFields: ['module', 'main'],
    conditions: ['workerd', 'worker', 'browser', 'import'],
    logLevel: 'silent',
  });
  return outfile;
}

export async function startEdgeDev(opts: EdgeDevOptions): Promise<EdgeDev> {
  const dir = mkdtempSync(join(tmpdir(), 'allegra-edge-'));
  try {
    const scriptPath = await bundleWorker(dir);
    const feedToken = randomBytes(24).toString('base64url');
    const mf = new Miniflare({
      modules: true,
      scriptPath,
      // Module paths are resolved below this root (the default, the working directory, would need "..").
      modulesRoot: dir,
      compatibilityDate: COMPATIBILITY_DATE,
      durableObjects: { ROUTES: 'RouteShard' },
      bindings: {
        ORIGINS: opts.origins.join(','),
        EDGE_TOKEN: opts.edgeToken,
        FEED_TOKEN: feedToken,
        SHARDS: String(opts.shards ?? 4),
      },
      host: opts.host ?? '127.0.0.1',
      port: opts.port ?? 0,
    });
    const url = (await mf.ready).toString().replace(/\/$/, '');
    let bridge: EdgeBridge;
    try {
      bridge = await new EdgeBridge({ registry: opts.registry, edgeUrl: url, feedToken, log: opts.log }).start();
    } catch (err) {
      await mf.dispose();
      throw err;
    }
    return {
      url,
      bridge,
      stop: async () => {
        await bridge.stop();
        await mf.dispose();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
