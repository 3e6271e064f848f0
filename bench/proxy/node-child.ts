/**
 * Child entry for the Node peer proxies:
 *   node node-child.js --kind minimal|http-proxy|fastify --port 42001 --upstreams http://127.0.0.1:1,…
 */
import { exitWithParent, requireArg } from '../lib/child.js';

exitWithParent();
const kind = requireArg('kind');
const port = Number(requireArg('port'));
const upstreams = requireArg('upstreams').split(',');

switch (kind) {
  case 'minimal': {
    const { serveMinimal } = await import('./minimal.js');
    await new Promise<void>((resolve) => serveMinimal(port, upstreams).once('listening', resolve));
    break;
  }
  case 'http-proxy': {
    const { serveHttpProxy } = await import('./http-proxy.js');
    await new Promise<void>((resolve) => serveHttpProxy(port, upstreams).once('listening', resolve));
    break;
  }
  case 'fastify': {
    const { serveFastify } = await import('./fastify.js');
    await serveFastify(port, upstreams);
    break;
  }
  default:
    process.stderr.write(`unknown --kind ${kind}\n`);
    process.exit(2);
}
process.stdout.write(`READY ${port}\n`);
