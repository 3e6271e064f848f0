/**
 * Hono apps of the gateway: the fallback for requests that are not proxied (unknown hosts, and later ACME
 * challenges and control routes) and the admin app (health, readiness, metrics). Both run unchanged on
 * the Node entry and on Cloudflare Workers.
 */
import { Hono } from 'hono';
import { normalizeHost } from '../protocol/keys.js';

export interface AdminDeps {
  /** Null when the gateway can route; otherwise why it cannot. */
  readiness: () => string | null;
  metrics: () => Promise<{ contentType: string; body: string }>;
}

export function createFallbackApp(): Hono {
  const app = new Hono();
  app.all('*', (c) => {
    const requestId = c.req.header('x-request-id') ?? crypto.randomUUID();
    const host = normalizeHost(c.req.header('host'));
    return c.text(host ? `no route for host ${host}\n` : 'request has no Host header\n', 404, {
      'x-request-id': requestId,
      'cache-control': 'no-store',
    });
  });
  return app;
}

export function createAdminApp(deps: AdminDeps): Hono {
  const app = new Hono();
  app.get('/healthz', (c) => c.text('ok\n'));
  app.get('/readyz', (c) => {
    const problem = deps.readiness();
    return problem === null ? c.text('ready\n') : c.text(`not ready: ${problem}\n`, 503);
  });
  app.get('/metrics', async (c) => {
    const { contentType, body } = await deps.metrics();
    return c.body(body, 200, { 'content-type': contentType });
  });
  return app;
}
