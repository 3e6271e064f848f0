/**
 * The WebAssembly world every wasm app is compiled to, and the guest-side glue that adapts a module whose
 * default export has `fetch(request, env, ctx)` (a Hono app, a Workers module) to it.
 *
 * Why a world of our own instead of `wasi:http/incoming-handler`: the host owns the socket and the HTTP
 * parsing (node:http), so the guest only needs one call per request with the request's parts and returns
 * the response's parts. wasi:http through jco needs preview2-shim's HTTP types and its helper I/O thread per
 * instance (~280 req/s through `jco serve` here, ENVIRONMENT-NOTES.md) and grants the guest a whole WASI
 * HTTP surface; this world imports no network interface at all, so outgoing HTTP is impossible by
 * construction (the component is built with componentize-js' `http` and `fetch-event` features disabled).
 * Request bodies are whole byte lists (bounded by the host). Response bodies are streamed: the glue hands
 * the head and each chunk to the host as the app's body stream produces them (`response-stream`), and the
 * host decides whether to send them as one response with a length or as a chunked stream.
 */

export const WORLD_NAME = 'app';

export const WORLD_WIT = `package allegra:app;

/// The response as the app produces it: the head once, then the body's chunks in order.
interface response-stream {
  start: func(status: u16, headers: list<tuple<string, string>>);
  write: func(chunk: list<u8>);
}

world app {
  import response-stream;

  record request {
    method: string,
    url: string,
    headers: list<tuple<string, string>>,
    body: list<u8>,
  }

  record response {
    status: u16,
    headers: list<tuple<string, string>>,
    body: list<u8>,
  }

  /// Called once per instance before the first request: the bindings the app sees as \`env\`.
  export configure: func(env: list<tuple<string, string>>);
  /// One HTTP request. Returns status 0 when the response went out through response-stream.
  export handle: func(req: request) -> response;
}
`;

/** Bumped whenever the world, the glue or the toolchain changes: it is part of the compile cache key. */
export const TOOLCHAIN_TAG = 'allegra-app-0.2.0+componentize-js-0.23.0+jco-transpile-0.15.0+tuned-1';

/** Specifier the glue imports the user's module by; the bundler maps it to the entry file. */
export const USER_ENTRY_SPECIFIER = 'allegra:user-entry';

/** The host interface the glue imports; left to componentize-js by the bundler. */
export const RESPONSE_STREAM_SPECIFIER = 'allegra:app/response-stream';

/**
 * Guest glue (runs inside the sandbox, so nothing here is trusted by the host: the host re-checks every
 * value it gets back). The top-level check runs during pre-initialisation (wizer), so a module without a
 * usable default export fails at compile time with this message.
 */
export const GUEST_GLUE = `import app from '${USER_ENTRY_SPECIFIER}';
import { start as streamStart, write as streamWrite } from '${RESPONSE_STREAM_SPECIFIER}';

if (app === null || (typeof app !== 'object' && typeof app !== 'function') || typeof app.fetch !== 'function') {
  throw new Error('the default export has no fetch(request) method (expected a Hono app or a Workers-style module)');
}

// Outgoing HTTP is not part of this world; say so instead of trapping inside the engine.
globalThis.fetch = async () => {
  throw new TypeError('outgoing HTTP is not granted to this app');
};

let env = Object.freeze({});
const ctx = Object.freeze({ waitUntil(p) { pending.push(Promise.resolve(p)); }, passThroughOnException() {} });
let pending = [];
const encoder = new TextEncoder();

function failure(status, message) {
  return { status, headers: [['content-type', 'text/plain; charset=utf-8'], ['x-allegra-wasm-error', 'app']], body: encoder.encode(message + '\\n') };
}

export function configure(pairs) {
  env = Object.freeze(Object.fromEntries(pairs));
}

export async function handle(r) {
  pending = [];
  const init = { method: r.method, headers: r.headers };
  if (r.body.length > 0 && r.method !== 'GET' && r.method !== 'HEAD') init.body = r.body;
  let res;
  try {
    res = await app.fetch(new Request(r.url, init), env, ctx);
  } catch (err) {
    console.error('unhandled error in fetch:', err && err.stack ? err.stack : String(err));
    return failure(500, 'app error: ' + (err && err.message ? err.message : String(err)));
  }
  if (!(res instanceof Response)) return failure(500, 'app error: fetch did not return a Response');
  const headers = [...res.headers];
  if (res.body === null) {
    if (pending.length > 0) await Promise.allSettled(pending);
    return { status: res.status, headers, body: new Uint8Array(0) };
  }
  // Each chunk goes to the host as soon as the body stream yields it (the host may still buffer it).
  streamStart(res.status, headers);
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (value && value.length > 0) streamWrite(value instanceof Uint8Array ? value : new Uint8Array(value));
  }
  if (pending.length > 0) await Promise.allSettled(pending);
  return { status: 0, headers: [], body: new Uint8Array(0) };
}
`;
