/** The 20-line proxy: node:http in, undici Pool.stream out, round-robin, no routing at all. */
import http from 'node:http';
import { Pool } from 'undici';
import { nodeProxyTarget } from './node-target.js';
import type { TargetSpec } from './types.js';

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);
const strip = (h: http.IncomingHttpHeaders): Record<string, string | string[]> => {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP.has(k)) out[k] = v;
  return out;
};

export function serveMinimal(port: number, upstreams: string[]): http.Server {
  const pools = upstreams.map((u) => new Pool(u, { connections: 128, keepAliveTimeout: 60_000 }));
  let next = 0;
  const server = http.createServer((req, res) => {
    const pool = pools[next++ % pools.length] as Pool;
    const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    pool.stream(
      { path: req.url ?? '/', method: req.method as 'GET', headers: strip(req.headers), body: hasBody ? req : null },
      ({ statusCode, headers }) => res.writeHead(statusCode, strip(headers)),
      (err) => {
        if (err && res.headersSent) res.destroy();
        else if (err) res.writeHead(502).end();
      },
    );
  });
  server.keepAliveTimeout = 65_000;
  return server.listen(port, '127.0.0.1');
}

export const minimalTarget: TargetSpec = {
  id: 'node-min',
  label: 'node:http + undici Pool.stream (20 lines)',
  multiWorker: false,
  start: (ctx) => nodeProxyTarget('minimal', ctx, 'Pool per replica: 128 connections, round-robin, no routing'),
};
