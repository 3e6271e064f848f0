// The load-step benchmark's app: `/slow?ms=N` answers after N ms, so N clients in a closed loop keep N
// requests in flight (the concurrency the autoscaler scales on). Each answer names its replica.
import { createServer } from 'node:http';

createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://replica');
  const ms = url.pathname === '/slow' ? Math.min(Number(url.searchParams.get('ms') ?? 100), 10_000) : 0;
  setTimeout(() => {
    const body = `${process.env.ALLEGRA_REPLICA}\n`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }, ms);
}).listen(Number(process.env.PORT), '127.0.0.1');
