/**
 * One replica's worker thread: holds the app's instance (or makes one per request), calls its `handle`
 * export and reports back. A worker per replica is the unit of isolation the host can always reclaim: an
 * endless loop in wasm cannot be interrupted from inside, but `worker.terminate()` stops it without
 * touching other replicas.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { wasiImports } from './wasi.js';
import type { FailureKind, WireRequest, WorkerInit, WorkerMessage, WorkerWarmup } from './worker-protocol.js';

interface AppRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body: Uint8Array;
}
interface AppResponse {
  status: number;
  headers: [string, string][];
  body: Uint8Array;
}
interface AppExports {
  configure(env: [string, string][]): void;
  handle(req: AppRequest): AppResponse;
}
type Instantiate = (
  getCoreModule: (name: string) => WebAssembly.Module,
  imports: Record<string, Record<string, unknown>>,
  instantiateCore: (m: WebAssembly.Module, i?: WebAssembly.Imports) => WebAssembly.Instance,
) => AppExports;

// jco's bindings try `WebAssembly.promising` (JSPI) for every export and fall back when it throws; on
// Node 20 it does not exist and each thrown TypeError costs ~3 ms, about 20 ms per instantiation. The sync
// bindings never call the promising variants, so an identity stand-in is enough and keeps the fallback.
if (typeof (WebAssembly as { promising?: unknown }).promising !== 'function') {
  Object.defineProperty(WebAssembly, 'promising', { value: (f: unknown) => f, configurable: true, writable: true });
}

const port = parentPort!;
let init: WorkerInit;
let instantiate: Instantiate;
let logFd = -1;
let logged = 0;
let logCapped = false;
let current: { app: AppExports; memory: WebAssembly.Memory | undefined } | undefined;
/** The request being handled, for the response-stream imports. */
let streaming: { id: number; bytes: number; overflow: boolean } | undefined;
/** A spare's instance made ahead of need (warm-up), with the artifact it belongs to; never used by a request before it is adopted. */
let prepared: { artifactKey: string; instance: { app: AppExports; memory: WebAssembly.Memory | undefined } } | undefined;

function post(msg: WorkerMessage): void {
  if (msg.type === 'response') port.postMessage(msg, [msg.body.buffer as ArrayBuffer]);
  else port.postMessage(msg);
}

function writeLog(bytes: Uint8Array): void {
  if (logFd < 0 || logCapped) return;
  if (logged + bytes.length > init.maxLogBytes) {
    logCapped = true;
    writeSync(logFd, `[allegra] log limit of ${init.maxLogBytes} bytes reached; further output of this replica is dropped\n`);
    return;
  }
  logged += bytes.length;
  writeSync(logFd, bytes);
}

function makeInstance(modules = init.modules): { app: AppExports; memory: WebAssembly.Memory | undefined } {
  let memory: WebAssembly.Memory | undefined;
  const app = instantiate(
    (name) => {
      const m = modules[name];
      if (!m) throw new Error(`compiled artifact lacks ${name}`);
      return m;
    },
    // writeLog drops output until the replica's log is open, so a prepared instance writes nowhere.
    { ...wasiImports({ stdout: writeLog, stderr: writeLog }), 'allegra:app/response-stream': responseStream },
    (module, imports) => {
      const instance = new WebAssembly.Instance(module, imports);
      const mem = (instance.exports as Record<string, unknown>)['memory'];
      if (!memory && mem instanceof WebAssembly.Memory) memory = mem;
      return instance;
    },
  );
  if (modules === init?.modules) app.configure(init.env);
  return { app, memory };
}

/** Takes over the spare's prepared instance if it is of this replica's artifact (same modules, same memory limit). */
function adoptPrepared(): boolean {
  const p = prepared;
  prepared = undefined;
  if (!p || p.artifactKey !== init.artifactKey) return false;
  p.instance.app.configure(init.env);
  current = p.instance;
  return true;
}

/** The host side of the world's `response-stream`: each chunk is posted to the main thread at once. */
const responseStream = {
  start(status: number, headers: [string, string][]): void {
    if (!streaming) return; // a warm-up request: nobody listens
    post({ type: 'head', id: streaming.id, status, headers });
  },
  write(chunk: Uint8Array): void {
    if (!streaming) return;
    streaming.bytes += chunk.length;
    if (streaming.bytes > init.maxResponseBytes) {
      // Stops the guest's body loop: the instance is replaced and the host answers or cuts the response.
      streaming.overflow = true;
      throw new Error('response body exceeds its limit');
    }
    const bytes = chunk.slice();
    port.postMessage({ type: 'chunk', id: streaming.id, bytes } satisfies WorkerMessage, [bytes.buffer as ArrayBuffer]);
  },
};

function memoryBytes(): number {
  return current?.memory?.buffer.byteLength ?? 0;
}

/** An exhausted memory shows either as SpiderMonkey's out-of-memory error or as a trap with the memory at its maximum. */
function classify(err: unknown, memory: WebAssembly.Memory | undefined): FailureKind {
  const message = String((err as Error)?.message ?? err);
  if (/out of memory|allocation size overflow/i.test(message)) return 'memory';
  const used = memory?.buffer.byteLength ?? 0;
  if (used > 0 && used + 2 * 65536 >= init.memoryLimitBytes) return 'memory';
  return err instanceof WebAssembly.RuntimeError ? 'trap' : 'internal';
}

function handle(req: WireRequest): void {
  let instantiateMs = 0;
  if (!current) {
    const t = performance.now();
    try {
      current = makeInstance();
    } catch (err) {
      post({ type: 'failure', id: req.id, kind: 'instantiate', message: String((err as Error)?.message ?? err), memoryBytes: 0 });
      return;
    }
    instantiateMs = performance.now() - t;
  }
  const instance = current;
  streaming = { id: req.id, bytes: 0, overflow: false };
  try {
    const res = instance.app.handle({ method: req.method, url: req.url, headers: req.headers, body: req.body });
    streaming = undefined;
    const used = memoryBytes();
    // The app's glue catches its own exceptions; one that ran out of memory must still count as the limit.
    const bodyText = res.status === 500 && res.body.length < 512 ? new TextDecoder().decode(res.body) : '';
    if (/^app error: (out of memory|allocation size overflow)/.test(bodyText)) {
      current = undefined;
      post({ type: 'failure', id: req.id, kind: 'memory', message: bodyText.trim(), memoryBytes: used });
      return;
    }
    if (init.mode === 'per-request') current = undefined;
    post({ type: 'response', id: req.id, status: res.status, headers: res.headers, body: res.body, instantiateMs, memoryBytes: used });
  } catch (err) {
    const overflow = streaming?.overflow === true;
    streaming = undefined;
    // A trapped instance may hold broken state: the next request gets a fresh one from the snapshot.
    const kind = overflow ? 'too-large' : classify(err, instance.memory);
    const used = instance.memory?.buffer.byteLength ?? 0;
    current = undefined;
    post({
      type: 'failure',
      id: req.id,
      kind,
      message: String((err as Error)?.message ?? err).split('\n')[0] ?? 'trap',
      memoryBytes: used,
    });
  }
}

port.on('message', async (msg: WorkerInit | WorkerWarmup | WireRequest | { type: 'close' }) => {
  if (msg.type === 'warmup') {
    // A spare compiles the bindings' JS and instantiates the artifact ahead of need; no request ever
    // reaches this instance unless a replica of the same artifact adopts it.
    try {
      ({ instantiate } = (await import(msg.bindingsUrl)) as { instantiate: Instantiate });
      if (msg.request) {
        const throwaway = makeInstance(msg.modules);
        throwaway.app.handle({ method: 'GET', url: 'http://warmup.invalid/', headers: [], body: new Uint8Array(0) });
      }
      prepared = { artifactKey: msg.artifactKey, instance: makeInstance(msg.modules) };
    } catch {
      prepared = undefined; // the real init reports any problem
    }
    post({ type: 'warmed', artifactKey: msg.artifactKey });
  } else if (msg.type === 'init') {
    init = msg;
    try {
      logFd = openSync(msg.logFile, 'a');
      ({ instantiate } = (await import(msg.bindingsUrl)) as { instantiate: Instantiate });
      let instantiateMs: number | null = null;
      let adopted = false;
      if (msg.eager && msg.mode === 'per-replica') {
        adopted = adoptPrepared();
        if (!adopted) {
          const t = performance.now();
          current = makeInstance();
          instantiateMs = performance.now() - t;
        }
      }
      // A lazy or per-request replica instantiates when a request comes, as it was asked to.
      prepared = undefined;
      post({ type: 'ready', instantiateMs, adopted });
    } catch (err) {
      post({ type: 'init-failed', message: String((err as Error)?.message ?? err).split('\n')[0] ?? 'init failed' });
    }
  } else if (msg.type === 'request') {
    handle(msg);
  } else if (msg.type === 'close') {
    if (logFd >= 0) closeSync(logFd);
    port.close();
  }
});

// Tells the pool this spare worker has booted and can take a replica at once.
post({ type: 'booted' });
