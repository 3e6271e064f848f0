/**
 * Time from `allegra expose` to the first good HTTPS response, with both issuers: the local CA (devnet)
 * and ACME against Pebble (when installed). Real processes: an embedded registry hosted here, one agent,
 * one gateway; the app is the demo. Goal: ≤ 3 s.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Agent, request } from 'undici';
import { bundle } from '../cli/bundle.js';
import { type Daemon, startDaemon, stopDaemon } from '../cli/children.js';
import { RpcClient } from '../protocol/client.js';
import { keys } from '../protocol/keys.js';
import { generateKeyPair } from '../protocol/signing.js';
import type { InstanceStatus } from '../protocol/types.js';
import { freePort } from '../quorum-agent/ports.js';
import { EmbeddedHost } from '../registry/embedded.js';

const DEMO = fileURLToPath(new URL('../../examples/demo/', import.meta.url));

async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Run {
  issuer: string;
  ms: number[];
  note?: string;
}

async function measure(issuer: 'local' | 'acme', runs: number): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'allegra-bench-expose-'));
  const registryDir = join(dir, 'registry');
  const daemons: Daemon[] = [];
  let pebble: { stop(): Promise<void>; directoryUrl: string; endpointCaFile: string; issuerRootPem(): Promise<string> } | undefined;
  const registry = await EmbeddedHost.start(registryDir);
  try {
    const httpPort = await freePort();
    const httpsPort = await freePort();
    let issuerArgs: string[];
    let ca: string;
    if (issuer === 'acme') {
      const mod = (await import(pathToFileURL(fileURLToPath(new URL('../test/helpers/pebble.js', import.meta.url))).href)) as {
        startPebble(o: { httpPort: number; tlsPort: number }): Promise<NonNullable<typeof pebble>>;
      };
      pebble = await mod.startPebble({ httpPort, tlsPort: httpsPort });
      issuerArgs = ['--acme-directory', pebble.directoryUrl, '--acme-ca', pebble.endpointCaFile];
      ca = await pebble.issuerRootPem();
    } else {
      issuerArgs = ['--local-ca', join(dir, 'ca')];
      ca = '';
    }
    await registry.put(keys.network(), JSON.stringify({ baseDomain: 'localhost', quorumSize: 1, httpsPort }));
    daemons.push(
      await startDaemon('agent', [
        'agent',
        '--registry',
        `embedded:${registryDir}`,
        '--listen',
        '127.0.0.1:0',
        '--data',
        join(dir, 'agent'),
        '--log',
        join(dir, 'agent.log'),
      ]),
    );
    daemons.push(
      await startDaemon('gateway', [
        'gateway',
        '--registry',
        `embedded:${registryDir}`,
        '--http',
        String(httpPort),
        '--https',
        String(httpsPort),
        '--admin',
        '0',
        '--log',
        join(dir, 'gateway.log'),
        ...issuerArgs,
      ]),
    );
    if (issuer === 'local') ca = (await import('node:fs')).readFileSync(join(dir, 'ca', 'root.crt'), 'utf8');
    const rpc = new RpcClient(String(daemons[0]?.ready.rpc), generateKeyPair());
    await until('a quorum', 10_000, async () => ((await registry.list('quorums/')).items.length > 0 ? true : undefined));
    const bundled = await bundle(DEMO);
    const packed = { bytes: (await import('node:fs')).readFileSync(bundled.file) };
    bundled.cleanup();
    const ms: number[] = [];
    for (let i = 0; i < runs; i++) {
      const name = `x${i}`;
      await rpc.call({
        method: 'POST',
        path: '/v1/instances',
        body: { json: { name, cmd: 'node server.mjs', replicas: { min: 1, max: 1 } } },
      });
      await rpc.call({ method: 'PUT', path: `/v1/instances/${name}/code`, body: { bytes: packed.bytes } });
      await until('a healthy replica', 20_000, async () => {
        const s = await rpc.call<InstanceStatus>({ method: 'GET', path: `/v1/instances/${name}` });
        return s.replicas.some((r) => r.healthy && r.version === s.instance.version) ? true : undefined;
      });
      const host = `${name}.localhost`;
      const client = new Agent({ connect: { ca, servername: host } });
      const t0 = performance.now();
      await rpc.call({ method: 'POST', path: `/v1/instances/${name}/expose`, body: { json: { port: 3000 } } });
      await until('a good HTTPS response', 30_000, async () => {
        const res = await request(`https://127.0.0.1:${httpsPort}/`, { dispatcher: client, headers: { host } });
        await res.body.dump();
        return res.statusCode === 200 ? true : undefined;
      });
      ms.push(performance.now() - t0);
      await client.close();
    }
    return { issuer: issuer === 'acme' ? 'ACME (Pebble, HTTP-01)' : 'local CA (devnet)', ms };
  } finally {
    await Promise.allSettled(daemons.map((d) => stopDaemon(d, 3_000)));
    await registry.close();
    await pebble?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function main(opts: { quick: boolean }): Promise<string> {
  const runs = opts.quick ? 2 : 5;
  const results: Run[] = [await measure('local', runs)];
  try {
    results.push(await measure('acme', runs));
  } catch (err) {
    results.push({ issuer: 'ACME (Pebble, HTTP-01)', ms: [], note: `not measured: ${(err as Error).message}` });
  }
  const fmt = (v: number | undefined) => (v === undefined ? '–' : v.toFixed(0));
  const rows = results.map((r) => {
    const s = [...r.ms].sort((a, b) => a - b);
    const median = s[Math.floor(s.length / 2)];
    return `| ${r.issuer} | ${s.length} | ${fmt(s[0])} | ${fmt(median)} | ${fmt(s[s.length - 1])} | ${median === undefined ? '–' : median <= 3000 ? 'yes' : 'no'} | ${r.note ?? ''} |`;
  });
  const md = [
    '### Time from `allegra expose` to the first good HTTPS response',
    '',
    'One agent and one gateway process on an embedded registry; each run creates and deploys a fresh demo app, then times the expose RPC + certificate issuance by the gateway + the first HTTPS GET that answers 200 while trusting only the issuer’s root. Goal ≤ 3 s.',
    '',
    '| issuer | runs | min ms | median ms | max ms | ≤ 3 s | note |',
    '| :--- | ---: | ---: | ---: | ---: | :--- | :--- |',
    ...rows,
    '',
  ].join('\n');
  process.stdout.write(`${md}\n`);
  return md;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main({ quick: process.argv.includes('--quick') });
}
