// The demo app: a tiny JSON API that says which replica answered.
// GET / → who answered; GET /items, POST /items → an in-memory list (per replica, on purpose: it shows
// that state kept in a process is not shared; durable state belongs in the network's state API).
import { createServer } from 'node:http';
import { hostname } from 'node:os';

const port = Number(process.env.PORT ?? 3000);
const replica = {
  instance: process.env.ALLEGRA_INSTANCE ?? 'demo',
  replica: process.env.ALLEGRA_REPLICA ?? '0',
  pid: process.pid,
  host: hostname(),
  port,
};
const items = [];
let served = 0;

function send(res, status, body) {
  const json = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  res.end(json);
}

createServer((req, res) => {
  served++;
  const url = new URL(req.url ?? '/', 'http://demo');
  if (req.method === 'GET' && url.pathname === '/') return send(res, 200, { hello: 'from Allegra', ...replica, served });
  if (req.method === 'GET' && url.pathname === '/health') return send(res, 200, { ok: true });
  if (url.pathname === '/items' && req.method === 'GET') return send(res, 200, { items, ...replica });
  if (url.pathname === '/items' && req.method === 'POST') {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > 65_536) req.destroy();
    });
    req.on('end', () => {
      let item;
      try {
        item = JSON.parse(body || '{}');
      } catch {
        return send(res, 400, { error: 'body must be JSON' });
      }
      items.push(item);
      send(res, 201, { stored: item, count: items.length, ...replica });
    });
    return;
  }
  send(res, 404, { error: `no route ${req.method} ${url.pathname}` });
}).listen(port, process.env.HOST ?? '127.0.0.1', () => {
  console.log(`demo replica ${replica.replica} listening on ${port}`);
});

process.on('SIGTERM', () => process.exit(0));
