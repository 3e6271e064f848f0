/** Messages between the wasm host's main thread and one replica's worker thread. */

export type InstantiateMode = 'per-replica' | 'per-request';

export interface WorkerInit {
  type: 'init';
  /** Identifies the artifact and its memory limit; a spare warmed for the same key hands over its instance. */
  artifactKey: string;
  /** file: URL of the jco bindings (app.js) of the compiled artifact. */
  bindingsUrl: string;
  /** Compiled core modules by file name; sharing a WebAssembly.Module with a worker shares its machine code. */
  modules: Record<string, WebAssembly.Module>;
  env: [string, string][];
  logFile: string;
  maxLogBytes: number;
  memoryLimitBytes: number;
  /** A streamed body past this size stops the request (the host refuses or cuts the response). */
  maxResponseBytes: number;
  mode: InstantiateMode;
  /** Instantiate now (true) or at the first request (false). */
  eager: boolean;
}

/** Sent to spare workers: load these bindings and instantiate once, so the JS glue is compiled before a replica needs it. */
export interface WorkerWarmup {
  type: 'warmup';
  artifactKey: string;
  /** Also answer one synthetic `GET /` in a throwaway instance (off for apps whose warm-up timed out). */
  request: boolean;
  bindingsUrl: string;
  modules: Record<string, WebAssembly.Module>;
}

export interface WireRequest {
  type: 'request';
  id: number;
  method: string;
  url: string;
  headers: [string, string][];
  body: Uint8Array;
}

export type FailureKind = 'memory' | 'trap' | 'instantiate' | 'internal' | 'too-large';

export type WorkerMessage =
  | { type: 'booted' }
  | { type: 'warmed'; artifactKey: string }
  | { type: 'ready'; instantiateMs: number | null; adopted: boolean }
  | { type: 'init-failed'; message: string }
  | {
      type: 'response';
      id: number;
      status: number;
      headers: [string, string][];
      body: Uint8Array;
      /** ms spent instantiating for this request (0 when the instance was warm). */
      instantiateMs: number;
      memoryBytes: number;
    }
  | { type: 'failure'; id: number; kind: FailureKind; message: string; memoryBytes: number }
  /** The head of a response the app streams; its chunks follow, then a `response` with status 0. */
  | { type: 'head'; id: number; status: number; headers: [string, string][] }
  | { type: 'chunk'; id: number; bytes: Uint8Array };
