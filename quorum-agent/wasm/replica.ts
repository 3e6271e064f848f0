/**
 * One wasm replica in the host: an HTTP server on its own Unix socket (the replica's endpoint), and a
 * worker thread holding the app's instance. Requests are run one at a time in the worker (a wasm
 * instance is single-threaded), with a bounded queue in front. Every limit is enforced here, outside the
 * guest: request and response sizes, the per-request deadline (past it the worker is terminated, which
 * is the one way to stop a runaway wasm loop, and a fresh worker takes its place), and memory (the
 * module's memory maximum; an instance that reached it is replaced). Failures answer a 5xx with one line
 * saying why and an `x-allegra-wasm-error` header naming the kind.
 */
import { existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import type { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { LoadedArtifact } from './artifact-cache.js';
import type { ReplicaLimits } from './limits.js';
import { StreamedBody } from './streamed-body.js';
import type { WorkerPool } from './worker-pool.js';
import type { FailureKind, InstantiateMode, WireRequest, WorkerInit, WorkerMessage } from './worker-protocol.js';

export interface ReplicaOptions {
  id: string;
  socketPath: string;
  logFile: string;
  env: Record<string, string>;
  limits: ReplicaLimits;
  mode: InstantiateMode;
  /** Instantiate at load (true) or at the first request (false: loaded but not instantiated). */
  eager: boolean;
  artifact: LoadedArtifact;
  workers: WorkerPool;
  log: Logger;
}

export interface ReplicaStats {
  id: string;
  endpoint: string;
  state: 'starting' | 'ready' | 'restarting' | 'failed' | 'stopped';
  mode: InstantiateMode;
  inFlight: number;
  queued: number;
  requests: number;
  responses: number;
  refused: Record<string, number>;
  workerRestarts: number;
  instantiations: number;
  adoptedInstances: number;
  lastInstantiateMs: number | null;
  memoryBytes: number;
  memoryLimitBytes: number;
}

type ErrorCode =
  | 'timeout'
  | 'memory'
  | 'trap'
  | 'app'
  | 'too-large'
  | 'response-too-large'
  | 'busy'
  | 'bad-request'
  | 'unavailable'
  | 'bad-response';

type Outcome =
  | { ok: true; status: number; headers: [string, string][]; body: Uint8Array; instantiateMs: number }
  | { ok: false; status: number; code: ErrorCode; reason: string };

interface Job {
  wire: WireRequest;
  settle(o: Outcome): void;
  stream: StreamedBody;
}

/** Hop-by-hop and framing headers: the host frames requests and responses itself. */
const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'content-length',
  'http2-settings',
]);
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const MAX_RESPONSE_HEADERS = 200;
const INIT_TIMEOUT_MS = 30_000;

export class WasmReplica {
  readonly endpoint: string;
  private server: Server | undefined;
  private worker: Worker | undefined;
  private ready = false;
  private failedReason: string | undefined;
  private stopped = false;
  private readonly queue: Job[] = [];
  private running: { job: Job; timer: NodeJS.Timeout; worker: Worker } | undefined;
  private nextId = 1;
  private admitted = 0;
  private readonly counters = {
    requests: 0,
    responses: 0,
    workerRestarts: 0,
    instantiations: 0,
    /** Instances taken over from a spare that had instantiated the artifact ahead of need. */
    adopted: 0,
    lastInstantiateMs: null as number | null,
    memoryBytes: 0,
  };
  private readonly refused: Record<string, number> = {};

  private constructor(private readonly opts: ReplicaOptions) {
    this.endpoint = `unix:${opts.socketPath}`;
  }

  static async start(opts: ReplicaOptions): Promise<WasmReplica> {
    const r = new WasmReplica(opts);
    try {
      // The socket listens while the worker starts: a request arriving early waits in the queue.
      await Promise.all([r.attachWorker(), r.listen()]);
    } catch (err) {
      await r.stop();
      throw err;
    }
    return r;
  }

  get healthy(): boolean {
    return !this.stopped && this.failedReason === undefined && this.server?.listening === true;
  }

  stats(): ReplicaStats {
    return {
      id: this.opts.id,
      endpoint: this.endpoint,
      state: this.stopped
        ? 'stopped'
        : this.failedReason
          ? 'failed'
          : this.ready
            ? 'ready'
            : this.counters.workerRestarts
              ? 'restarting'
              : 'starting',
      mode: this.opts.mode,
      inFlight: this.running ? 1 : 0,
      queued: this.queue.length,
      requests: this.counters.requests,
      responses: this.counters.responses,
      refused: { ...this.refused },
      workerRestarts: this.counters.workerRestarts,
      instantiations: this.counters.instantiations,
      adoptedInstances: this.counters.adopted,
      lastInstantiateMs: this.counters.lastInstantiateMs,
      memoryBytes: this.counters.memoryBytes,
      memoryLimitBytes: this.opts.artifact.memoryLimitBytes,
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const job of this.queue.splice(0)) job.settle({ ok: false, status: 503, code: 'unavailable', reason: 'replica unloaded' });
    if (this.running) {
      clearTimeout(this.running.timer);
      this.running.job.settle({ ok: false, status: 503, code: 'unavailable', reason: 'replica unloaded' });
      this.running = undefined;
    }
    const worker = this.worker;
    this.worker = undefined;
    const server = this.server;
    if (server) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
    await worker?.terminate();
    if (server?.listening === false && existsSync(this.opts.socketPath) && lstatSync(this.opts.socketPath).isSocket())
      unlinkSync(this.opts.socketPath);
  }

  // ---- worker lifecycle ----

  private async attachWorker(): Promise<void> {
    this.ready = false;
    const worker = await this.opts.workers.take();
    if (this.stopped) {
      await worker.terminate();
      return;
    }
    this.worker = worker;
    worker.ref();
    const { artifact, limits } = this.opts;
    const init: WorkerInit = {
      type: 'init',
      artifactKey: artifact.key,
      bindingsUrl: artifact.bindingsUrl,
      modules: artifact.modules,
      env: Object.entries(this.opts.env),
      logFile: this.opts.logFile,
      maxLogBytes: limits.maxLogBytes,
      memoryLimitBytes: artifact.memoryLimitBytes,
      maxResponseBytes: limits.maxResponseBytes,
      mode: this.opts.mode,
      eager: this.opts.eager,
    };
    const result = await new Promise<WorkerMessage>((resolve) => {
      // Instantiation takes milliseconds; a worker silent this long is stuck and is not waited for.
      const timer = setTimeout(
        () => resolve({ type: 'init-failed', message: `worker did not start in ${INIT_TIMEOUT_MS} ms` }),
        INIT_TIMEOUT_MS,
      );
      const onMessage = (m: WorkerMessage) => {
        if (m.type !== 'ready' && m.type !== 'init-failed') return;
        clearTimeout(timer);
        worker.off('message', onMessage);
        resolve(m);
      };
      worker.on('message', onMessage);
      worker.once('exit', () => resolve({ type: 'init-failed', message: 'worker exited during start' }));
      worker.postMessage(init);
    });
    if (worker !== this.worker) return; // stopped or replaced meanwhile
    if (result.type === 'init-failed') {
      this.failedReason = `instantiation failed: ${result.message}`;
      this.opts.log.error({ replica: this.opts.id, reason: result.message }, 'wasm replica failed to start');
      this.failQueued(503, 'unavailable', this.failedReason);
      await worker.terminate();
      throw new Error(this.failedReason);
    }
    if (result.type === 'ready' && result.instantiateMs !== null) {
      this.counters.instantiations++;
      this.counters.lastInstantiateMs = result.instantiateMs;
    }
    if (result.type === 'ready' && result.adopted) this.counters.adopted++;
    worker.on('message', (m: WorkerMessage) => this.onWorkerMessage(worker, m));
    worker.on('error', (err) => this.onWorkerGone(worker, err));
    worker.on('exit', () => this.onWorkerGone(worker, undefined));
    this.ready = true;
    this.dispatch();
  }

  /** Replaces the worker (after a timeout, or if it died), keeping queued requests for the new one. */
  private replaceWorker(old: Worker): void {
    if (this.worker !== old || this.stopped) return;
    this.worker = undefined;
    this.ready = false;
    this.counters.workerRestarts++;
    void old.terminate();
    this.attachWorker().catch(() => undefined);
  }

  private onWorkerGone(worker: Worker, err: Error | undefined): void {
    if (this.worker !== worker) return;
    const oom = (err as { code?: string } | undefined)?.code === 'ERR_WORKER_OUT_OF_MEMORY';
    if (this.running?.worker === worker) {
      const { job, timer } = this.running;
      clearTimeout(timer);
      this.running = undefined;
      job.settle(
        oom
          ? { ok: false, status: 503, code: 'memory', reason: 'the request exceeded the replica memory limit' }
          : { ok: false, status: 502, code: 'trap', reason: `the replica worker stopped: ${err?.message ?? 'exited'}` },
      );
    }
    this.opts.log.warn({ replica: this.opts.id, err: err?.message }, 'wasm worker gone; replacing it');
    this.replaceWorker(worker);
  }

  private onWorkerMessage(worker: Worker, m: WorkerMessage): void {
    if (m.type !== 'response' && m.type !== 'failure' && m.type !== 'head' && m.type !== 'chunk') return;
    const run = this.running;
    if (!run || run.worker !== worker || run.job.wire.id !== m.id) return;
    const stream = run.job.stream;
    if (m.type === 'head') {
      const checked = this.checkHead(m.status, m.headers);
      if (!checked.ok) return; // refused when the response completes
      stream.start(checked.status, checked.headers);
      return;
    }
    if (m.type === 'chunk') {
      if (stream.head) stream.chunk(m.bytes);
      return;
    }
    clearTimeout(run.timer);
    this.running = undefined;
    this.counters.memoryBytes = m.memoryBytes;
    if (m.type === 'response') {
      if (m.instantiateMs > 0) {
        this.counters.instantiations++;
        this.counters.lastInstantiateMs = m.instantiateMs;
      }
      if (m.status !== 0) run.job.settle(this.checkResponse(m));
      else if (stream.flowing) {
        this.counters.responses++;
        stream.end();
      } else if (!stream.head) {
        run.job.settle({ ok: false, status: 502, code: 'bad-response', reason: 'the app ended a streamed response it never started' });
      } else {
        run.job.settle(this.checkResponse({ ...m, status: stream.head.status, headers: stream.head.headers, body: stream.collected() }));
      }
    } else {
      run.job.settle(this.failureOutcome(m.kind, m.message));
    }
    this.dispatch();
  }

  private failureOutcome(kind: FailureKind, message: string): Outcome {
    const mib = Math.round(this.opts.artifact.memoryLimitBytes / (1024 * 1024));
    switch (kind) {
      case 'memory':
        return { ok: false, status: 503, code: 'memory', reason: `the request exceeded the replica memory limit of ${mib} MiB` };
      case 'instantiate':
        return { ok: false, status: 503, code: 'unavailable', reason: `instantiation failed: ${message}` };
      case 'too-large':
        return {
          ok: false,
          status: 502,
          code: 'response-too-large',
          reason: `the response exceeds ${this.opts.limits.maxResponseBytes} bytes`,
        };
      default:
        return { ok: false, status: 502, code: 'trap', reason: `the app trapped: ${message}` };
    }
  }

  private checkResponse(m: Extract<WorkerMessage, { type: 'response' }>): Outcome {
    const head = this.checkHead(m.status, m.headers);
    if (!head.ok) return head;
    const { limits } = this.opts;
    if (m.body.length > limits.maxResponseBytes) {
      return { ok: false, status: 502, code: 'response-too-large', reason: `the response exceeds ${limits.maxResponseBytes} bytes` };
    }
    return { ok: true, status: head.status, headers: head.headers, body: m.body, instantiateMs: m.instantiateMs };
  }

  /** The app's status and headers, checked: invalid names or values and framing headers are dropped. */
  private checkHead(
    status: number,
    raw: [string, string][],
  ): { ok: true; status: number; headers: [string, string][] } | Extract<Outcome, { ok: false }> {
    if (!Number.isInteger(status) || status < 200 || status > 599) {
      return { ok: false, status: 502, code: 'bad-response', reason: `the app answered an invalid status ${status}` };
    }
    const headers: [string, string][] = [];
    for (const pair of raw.slice(0, MAX_RESPONSE_HEADERS)) {
      const [name, value] = pair;
      if (typeof name !== 'string' || typeof value !== 'string') continue;
      const lower = name.toLowerCase();
      if (!TOKEN.test(name) || !HEADER_VALUE.test(value) || HOP.has(lower)) continue;
      headers.push([lower, value]);
    }
    return { ok: true, status, headers };
  }

  private dispatch(): void {
    if (this.running || !this.ready || !this.worker) return;
    const job = this.queue.shift();
    if (!job) return;
    const worker = this.worker;
    const timeoutMs = this.opts.limits.timeoutMs;
    const timer = setTimeout(() => {
      if (this.running?.job !== job) return;
      this.running = undefined;
      job.settle({ ok: false, status: 504, code: 'timeout', reason: `the request exceeded the replica time limit of ${timeoutMs} ms` });
      this.opts.log.warn({ replica: this.opts.id, timeoutMs }, 'wasm request timed out; terminating its worker');
      this.replaceWorker(worker);
    }, timeoutMs);
    this.running = { job, timer, worker };
    worker.postMessage(job.wire, [job.wire.body.buffer as ArrayBuffer]);
  }

  private failQueued(status: number, code: ErrorCode, reason: string): void {
    for (const job of this.queue.splice(0)) job.settle({ ok: false, status, code, reason });
  }

  // ---- HTTP side ----

  private async listen(): Promise<void> {
    const { socketPath, limits } = this.opts;
    mkdirSync(dirname(socketPath), { recursive: true });
    // A stale socket of an earlier replica is replaced; anything else at that path is not ours to delete.
    if (existsSync(socketPath)) {
      if (!lstatSync(socketPath).isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
      unlinkSync(socketPath);
    }
    const server = createServer(
      { headersTimeout: 10_000, requestTimeout: limits.timeoutMs * (limits.maxQueue + 2) + 10_000, maxHeaderSize: 16 * 1024 },
      (req, res) => this.onRequest(req, res),
    );
    server.keepAliveTimeout = 5_000;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  private refuse(res: ServerResponse, status: number, code: ErrorCode, reason: string): void {
    this.refused[code] = (this.refused[code] ?? 0) + 1;
    if (res.headersSent || res.destroyed) return;
    const body = `${reason}\n`;
    res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'x-allegra-wasm-error': code,
    });
    res.end(body);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.counters.requests++;
    const { limits } = this.opts;
    if (!req.url?.startsWith('/')) return this.refuse(res, 400, 'bad-request', 'request target must be a path');
    if (this.failedReason) return this.refuse(res, 503, 'unavailable', this.failedReason);
    if (this.stopped) return this.refuse(res, 503, 'unavailable', 'replica unloaded');
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limits.maxRequestBytes) {
      res.shouldKeepAlive = false;
      return this.refuse(res, 413, 'too-large', `request body exceeds ${limits.maxRequestBytes} bytes`);
    }
    // Admitted requests (reading their body, queued or running) hold a slot until their response closes,
    // so the bound holds even while many bodies are still arriving.
    if (this.admitted >= limits.maxQueue + 1) {
      return this.refuse(res, 503, 'busy', `replica busy: ${this.admitted} requests already admitted`);
    }
    this.admitted++;
    res.once('close', () => {
      this.admitted--;
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let aborted = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limits.maxRequestBytes) {
        aborted = true;
        res.shouldKeepAlive = false;
        this.refuse(res, 413, 'too-large', `request body exceeds ${limits.maxRequestBytes} bytes`);
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => {
      aborted = true;
    });
    req.on('end', () => {
      if (aborted) return;
      const body = new Uint8Array(size);
      let off = 0;
      for (const c of chunks) {
        body.set(c, off);
        off += c.length;
      }
      const headers: [string, string][] = [];
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
        const name = req.rawHeaders[i]!.toLowerCase();
        if (!HOP.has(name)) headers.push([name, req.rawHeaders[i + 1]!]);
      }
      const host = typeof req.headers.host === 'string' && /^[\w.:[\]-]{1,255}$/.test(req.headers.host) ? req.headers.host : 'localhost';
      const noBody = req.method === 'HEAD';
      const job: Job = {
        wire: { type: 'request', id: this.nextId++, method: req.method ?? 'GET', url: `http://${host}${req.url}`, headers, body },
        settle: (o) => (job.stream.flowing ? this.cutStream(job.stream, o) : this.respond(req, res, o)),
        stream: new StreamedBody(res, noBody, (status, h) => this.writeHead(req, res, status, h, null, 0)),
      };
      res.once('close', () => {
        // A client that left while its request was still queued costs nothing more.
        const i = this.queue.indexOf(job);
        if (i >= 0) this.queue.splice(i, 1);
      });
      this.queue.push(job);
      this.dispatch();
    });
  }

  /** A failure after a streamed head went out: all that can be done is to cut the response short. */
  private cutStream(stream: StreamedBody, o: Outcome): void {
    if (!o.ok) {
      this.refused[o.code] = (this.refused[o.code] ?? 0) + 1;
      this.opts.log.warn({ replica: this.opts.id, reason: o.reason }, 'streamed wasm response cut short');
    }
    stream.cut();
  }

  private respond(req: IncomingMessage, res: ServerResponse, o: Outcome): void {
    if (!o.ok) return this.refuse(res, o.status, o.code, o.reason);
    this.counters.responses++;
    if (res.destroyed) return;
    const noBody = this.writeHead(req, res, o.status, o.headers, o.body.length, o.instantiateMs);
    res.end(noBody ? undefined : o.body);
  }

  /** Writes the head; `length` null sends the body chunked. Returns true when the response has no body. */
  private writeHead(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    pairs: [string, string][],
    length: number | null,
    instantiateMs: number,
  ): boolean {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of pairs) {
      const prev = headers[name];
      headers[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
    }
    const noBody = req.method === 'HEAD' || status === 204 || status === 304;
    if (!noBody && length !== null) headers['content-length'] = String(length);
    if (instantiateMs > 0) headers['x-allegra-instantiate-ms'] = instantiateMs.toFixed(2);
    res.writeHead(status, headers);
    return noBody;
  }
}
