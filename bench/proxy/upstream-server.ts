/**
 * Child entry: one upstream replica, a tiny fixed-response keep-alive HTTP server.
 *   node upstream-server.js --port 41001 --index 0
 * GET /, /16k, /1m → fixed bodies; any request with a body → drains it, answers the small body.
 */
import http from 'node:http';
import { exitWithParent, requireArg } from '../lib/child.js';
import { SCENARIOS, SMALL_BODY } from './scenarios.js';

exitWithParent();
const port = Number(requireArg('port'));
const index = requireArg('index');

interface Canned {
  body: Buffer;
  headers: http.OutgoingHttpHeaders;
}

function canned(body: Buffer): Canned {
  return {
    body,
    headers: { 'content-type': 'text/plain', 'content-length': body.length, 'x-replica': index },
  };
}

const small = canned(Buffer.from(SMALL_BODY));
const byPath = new Map<string, Canned>();
for (const s of SCENARIOS) {
  if (s.method === 'GET') byPath.set(s.path, s.path === '/' ? small : canned(Buffer.alloc(s.responseBodyBytes, 'a')));
}

function send(res: http.ServerResponse, c: Canned): void {
  res.writeHead(200, c.headers);
  res.end(c.body);
}

const server = http.createServer((req, res) => {
  if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) {
    req.on('data', () => undefined);
    req.on('end', () => send(res, small));
    return;
  }
  send(res, byPath.get(req.url ?? '/') ?? small);
});
// Longer than every proxy's idle upstream keep-alive, so the replica never closes a pooled
// connection under a proxy's feet (which would show up as spurious errors).
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.requestTimeout = 0;
server.listen(port, '127.0.0.1', () => process.stdout.write(`READY ${port}\n`));
