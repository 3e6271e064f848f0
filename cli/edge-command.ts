/**
 * `allegra edge dev --registry URL --port P`: the Workers edge run locally in workerd (edge/dev.ts), fed
 * from the registry by the bridge and forwarding to the Node gateways given with --origin. The gateways
 * accept the edge's requests once their config names the same token (`"edgeTokenFile"`).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { startEdgeDev } from '../edge/dev.js';
import { openOrFail, parsePort, type RegistryCliOptions, runUntilStopped } from './daemon-commands.js';
import { makeLogger } from './log.js';
import { CliError } from './output.js';

export interface EdgeDevCliOptions extends RegistryCliOptions {
  port?: string;
  host?: string;
  origin?: string[];
  edgeTokenFile?: string;
  log?: string;
}

function edgeToken(file: string | undefined): { token: string; file: string | null; created: boolean } {
  if (!file) return { token: randomBytes(24).toString('base64url'), file: null, created: true };
  try {
    const token = readFileSync(file, 'utf8').trim();
    if (token.length < 16) throw new CliError(`--edge-token-file ${file}: the token must have at least 16 characters`, 2);
    return { token, file, created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      throw err instanceof CliError ? err : new CliError(`--edge-token-file ${file}: ${(err as Error).message}`, 2);
    // A new file: the token is made here and kept for the gateways' config.
    const token = randomBytes(24).toString('base64url');
    writeFileSync(file, `${token}\n`, { mode: 0o600 });
    return { token, file, created: true };
  }
}

export async function edgeDevCommand(opts: EdgeDevCliOptions): Promise<void> {
  const port = parsePort(opts.port, '--port', 8787);
  const origins = opts.origin?.length ? opts.origin : ['http://127.0.0.1:8080'];
  for (const o of origins) {
    try {
      new URL(o);
    } catch {
      throw new CliError(`--origin expects a URL (got "${o}")`, 2);
    }
  }
  const token = edgeToken(opts.edgeTokenFile);
  const log = makeLogger('edge', opts.log);
  const registry = await openOrFail(opts, 'gateway');
  let edge: Awaited<ReturnType<typeof startEdgeDev>>;
  try {
    edge = await startEdgeDev({ registry, origins, edgeToken: token.token, host: opts.host ?? '127.0.0.1', port, log });
  } catch (err) {
    await registry.close();
    throw new CliError(`edge failed to start: ${(err as Error).message}`);
  }
  process.send?.({ type: 'ready', role: 'edge', url: edge.url });
  const trust = token.file
    ? `gateways trust it with {"edgeTokenFile": "${token.file}"} in their --config`
    : 'no --edge-token-file given: gateways will not trust this edge';
  process.stdout.write(`edge (workerd) serving on ${edge.url}, forwarding to ${origins.join(', ')}; ${trust}\n`);
  runUntilStopped(log, async () => {
    await edge.stop();
    await registry.close();
  });
}
