/** node-http-proxy in its best-practice configuration: keep-alive agent, round-robin over the replicas. */
import http from 'node:http';
import { createRequire } from 'node:module';
import { nodeProxyTarget } from './node-target.js';
import type { TargetSpec } from './types.js';

/** The part of http-proxy 1.18's API used here (the package ships no types). */
interface ProxyServer {
  web(req: http.IncomingMessage, res: http.ServerResponse, opts: { target: string }): void;
  on(event: 'error', cb: (err: Error, req: http.IncomingMessage, res: http.ServerResponse) => void): void;
}
interface HttpProxyModule {
  createProxyServer(opts: { agent: http.Agent; xfwd?: boolean; proxyTimeout?: number }): ProxyServer;
}

export function serveHttpProxy(port: number, upstreams: string[]): http.Server {
  const httpProxy = createRequire(import.meta.url)('http-proxy') as HttpProxyModule;
  // Without a keep-alive agent http-proxy sends `Connection: close` upstream on every request.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 128, maxFreeSockets: 128, keepAliveMsecs: 60_000 });
  const proxy = httpProxy.createProxyServer({ agent, xfwd: false, proxyTimeout: 30_000 });
  proxy.on('error', (_err, _req, res) => {
    if (!res.headersSent) res.writeHead(502).end();
    else res.destroy();
  });
  let next = 0;
  const server = http.createServer((req, res) => {
    proxy.web(req, res, { target: upstreams[next++ % upstreams.length] as string });
  });
  server.keepAliveTimeout = 65_000;
  return server.listen(port, '127.0.0.1');
}

export const httpProxyTarget: TargetSpec = {
  id: 'http-proxy',
  label: 'node http-proxy',
  multiWorker: false,
  start: (ctx) => nodeProxyTarget('http-proxy', ctx, 'keep-alive http.Agent (maxSockets 128), round-robin'),
};
