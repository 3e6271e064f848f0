/** fastify + @fastify/reply-from, best practice: undici BalancedPool over the replicas, bodies streamed unparsed. */
import replyFrom from '@fastify/reply-from';
import Fastify from 'fastify';
import { nodeProxyTarget } from './node-target.js';
import type { TargetSpec } from './types.js';

export async function serveFastify(port: number, upstreams: string[]): Promise<void> {
  const app = Fastify({ logger: false, keepAliveTimeout: 65_000, bodyLimit: 16 * 1024 * 1024 });
  // Pass request bodies through as streams instead of parsing them.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
  await app.register(replyFrom, {
    base: upstreams, // ≥ 2 origins → undici BalancedPool, round-robin
    undici: { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 },
  });
  app.all('/*', (req, reply) => reply.from(req.url));
  await app.listen({ port, host: '127.0.0.1' });
}

export const fastifyTarget: TargetSpec = {
  id: 'fastify',
  label: 'fastify + @fastify/reply-from',
  multiWorker: false,
  start: (ctx) => nodeProxyTarget('fastify', ctx, 'reply-from with undici BalancedPool (128 conns), no body parsing'),
};
