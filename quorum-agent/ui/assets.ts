/**
 * The UI's static files (built by `npm run build` into dist/ui), served under `/ui` by every agent. They are
 * read once into memory from a fixed list, so no request path ever reaches the file system. Every answer
 * carries a Content-Security-Policy that allows only this origin's own scripts, styles and connections: no
 * inline script, no eval, nothing fetched from elsewhere, no framing.
 */
import { readFileSync } from 'node:fs';
import type { Hono } from 'hono';

const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

export const UI_SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cache-control': 'no-store',
};

/** dist/ui beside dist/quorum-agent (this file runs from dist/quorum-agent/ui/assets.js). */
const DEFAULT_DIR = new URL('../../ui/', import.meta.url);

function load(dir: URL): Map<string, Buffer> | undefined {
  try {
    return new Map(Object.keys(FILES).map((f) => [f, readFileSync(new URL(f, dir))]));
  } catch {
    return undefined;
  }
}

export function assetRoutes(app: Hono, dir: URL = DEFAULT_DIR): void {
  let files: Map<string, Buffer> | undefined;
  const serve = (name: string) => {
    files ??= load(dir);
    const body = files?.get(name);
    if (!body) return new Response('the UI is not built here: run `npm run build`\n', { status: 503, headers: UI_SECURITY_HEADERS });
    return new Response(new Uint8Array(body), { headers: { ...UI_SECURITY_HEADERS, 'content-type': FILES[name] as string } });
  };
  app.get('/ui', () => serve('index.html'));
  app.get('/ui/', () => serve('index.html'));
  app.get('/ui/:file', (c) => {
    const file = c.req.param('file');
    if (!Object.hasOwn(FILES, file))
      return new Response('not found\n', { status: 404, headers: { ...UI_SECURITY_HEADERS, 'content-type': 'text/plain' } });
    return serve(file);
  });
}
