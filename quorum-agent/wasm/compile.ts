/**
 * Compiles a wasm app once per artifact. The compiled form (core modules + jco bindings + manifest) is kept
 * in `<cacheDir>/<sha256>-<toolchain>/`, written to a temp dir and renamed into place, so a crash never
 * leaves a half-written entry and concurrent compiles of one artifact in this process share one child.
 * Compilation runs in a child process with a time limit: it is CPU-heavy (tens of seconds) and would
 * otherwise block the caller's event loop.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CompileError } from './bundle.js';
import type { CompileChildMessage, CompileJob } from './compile-child.js';
import { GUEST_GLUE, TOOLCHAIN_TAG, WORLD_WIT } from './world.js';

export { CompileError } from './bundle.js';

export interface CompileOptions {
  /** The app: a JavaScript/TypeScript module, or a directory holding one. */
  source: string;
  /** Where compiled artifacts are cached. */
  cacheDir: string;
  /** The artifact's sha256 (the deployed blob's hash); computed over the source when absent. */
  sha256?: string;
  /** Default 180 s: componentize takes ~30–60 s on a busy 2-core machine. */
  timeoutMs?: number;
  onProgress?: (stage: string) => void;
}

export interface CompiledManifest {
  key: string;
  sha256: string;
  toolchain: string;
  /** Core modules in the order jco's bindings name them (`app.core.wasm`, `app.core2.wasm`, …). */
  coreModules: string[];
  bindings: string;
  bundleBytes: number;
  componentBytes: number;
  compiledAt: string;
  stageMs: Record<string, number>;
}

export interface CompiledApp {
  key: string;
  /** Directory holding the compiled artifact; what the wasm host loads. */
  dir: string;
  manifest: CompiledManifest;
  /** True when it came from the cache. */
  cached: boolean;
}

const CHILD = fileURLToPath(new URL('./compile-child.js', import.meta.url));
const MANIFEST = 'manifest.json';
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Short hash of everything that changes the compiled output besides the app itself. */
export const TOOLCHAIN_HASH = createHash('sha256').update(TOOLCHAIN_TAG).update(WORLD_WIT).update(GUEST_GLUE).digest('hex').slice(0, 12);

export function cacheKey(sha256: string): string {
  if (!SHA256_HEX.test(sha256)) throw new CompileError('entry', 'artifact sha256 must be 64 lower-case hex digits');
  return `${sha256}-${TOOLCHAIN_HASH}`;
}

/** sha256 over a file, or over a directory's relative paths and contents in sorted order. */
export function hashSource(source: string): string {
  const abs = resolve(source);
  const h = createHash('sha256');
  if (!existsSync(abs)) throw new CompileError('entry', `${source} does not exist`);
  if (statSync(abs).isFile()) return h.update(readFileSync(abs)).digest('hex');
  // Symlinks are hashed as their target text, never followed (a link loop must not hang the walk).
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const st = lstatSync(path);
      const rel = relative(abs, path);
      if (st.isDirectory()) walk(path);
      else if (st.isFile()) h.update(rel).update('\0').update(readFileSync(path)).update('\0');
      else if (st.isSymbolicLink()) h.update(rel).update('\0->').update(readlinkSync(path)).update('\0');
    }
  };
  walk(abs);
  return h.digest('hex');
}

/** The cached compile of an artifact, if there is a complete one. */
export function readCompiled(cacheDir: string, sha256: string): CompiledApp | undefined {
  const key = cacheKey(sha256);
  const dir = join(cacheDir, key);
  const file = join(dir, MANIFEST);
  if (!existsSync(file)) return undefined;
  try {
    const manifest = JSON.parse(readFileSync(file, 'utf8')) as CompiledManifest;
    if (manifest.key === key && Array.isArray(manifest.coreModules)) return { key, dir, manifest, cached: true };
  } catch {
    /* unreadable: treated as absent, and replaced by the next compile */
  }
  return undefined;
}

/**
 * jco's bindings depend only on the world, so every app compiled with this toolchain gets the same JS.
 * They are stored once under `<cacheDir>/bindings/<sha256>.js` and the manifest points there: a worker
 * that has loaded (and compiled) them once serves any app without loading them again.
 */
function shareBindings(cacheDir: string, file: string): string {
  const bytes = readFileSync(file);
  const name = `${createHash('sha256').update(bytes).digest('hex')}.js`;
  const dir = join(cacheDir, 'bindings');
  mkdirSync(dir, { recursive: true });
  // The bindings are an ES module; a package.json beside them keeps Node from guessing its module type.
  if (!existsSync(join(dir, 'package.json'))) writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n');
  if (!existsSync(join(dir, name))) {
    const tmp = join(dir, `.${name}.${randomBytes(6).toString('hex')}`);
    writeFileSync(tmp, bytes);
    renameSync(tmp, join(dir, name));
  }
  rmSync(file);
  return `../bindings/${name}`;
}

const inFlight = new Map<string, Promise<CompiledApp>>();

/**
 * Compiles run one at a time per process (each takes a core and ~0.5 GB for tens of seconds); the time
 * limit counts from a compile's start, not from its wait in this queue.
 */
let compileQueue: Promise<unknown> = Promise.resolve();

export async function compileApp(opts: CompileOptions): Promise<CompiledApp> {
  const sha256 = opts.sha256 ?? hashSource(opts.source);
  const key = cacheKey(sha256);
  const hit = readCompiled(opts.cacheDir, sha256);
  if (hit) return hit;
  const running = inFlight.get(`${opts.cacheDir}\0${key}`);
  if (running) return running;
  const p = compileQueue
    .catch(() => undefined)
    .then(() => readCompiled(opts.cacheDir, sha256) ?? compileOnce(opts, sha256, key))
    .finally(() => inFlight.delete(`${opts.cacheDir}\0${key}`));
  compileQueue = p.catch(() => undefined);
  inFlight.set(`${opts.cacheDir}\0${key}`, p);
  return p;
}

/**
 * Agents sharing a cache directory (several on one machine) compile an artifact once between them: the
 * first takes `.lock-<key>` (its pid inside; a dead holder's lock is taken over), the others wait for its
 * result and use it, or compile themselves once the lock is gone without one.
 */
async function compileOnce(opts: CompileOptions, sha256: string, key: string): Promise<CompiledApp> {
  mkdirSync(opts.cacheDir, { recursive: true });
  const lock = join(opts.cacheDir, `.lock-${key}`);
  const deadline = Date.now() + (opts.timeoutMs ?? 180_000);
  for (;;) {
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const done = readCompiled(opts.cacheDir, sha256);
    if (done) return done;
    if (!holderAlive(lock)) {
      rmSync(lock, { force: true });
      continue;
    }
    if (Date.now() > deadline)
      throw new CompileError('timeout', 'another process has been compiling this app for longer than the time limit');
    opts.onProgress?.('waiting for another compile of the same app');
    await new Promise((r) => setTimeout(r, 250));
  }
  try {
    return readCompiled(opts.cacheDir, sha256) ?? (await compileFresh(opts, sha256, key));
  } finally {
    rmSync(lock, { force: true });
  }
}

function holderAlive(lock: string): boolean {
  let text: string;
  try {
    text = readFileSync(lock, 'utf8');
  } catch {
    return true; // removed meanwhile: look again
  }
  if (text === '') return true; // just created, its pid not yet written
  const pid = Number(text);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function compileFresh(opts: CompileOptions, sha256: string, key: string): Promise<CompiledApp> {
  mkdirSync(opts.cacheDir, { recursive: true });
  const work = join(opts.cacheDir, `.tmp-${key.slice(0, 16)}-${randomBytes(6).toString('hex')}`);
  const outDir = join(work, 'out');
  mkdirSync(join(work, 'tmp'), { recursive: true });
  try {
    const result = await runChild({ source: resolve(opts.source), outDir }, work, opts.timeoutMs ?? 180_000, opts.onProgress);
    const manifest: CompiledManifest = {
      key,
      sha256,
      toolchain: TOOLCHAIN_TAG,
      coreModules: result.coreModules,
      bindings: 'app.js',
      bundleBytes: result.bundleBytes,
      componentBytes: result.componentBytes,
      compiledAt: new Date().toISOString(),
      stageMs: Object.fromEntries(Object.entries(result.stageMs).map(([k, v]) => [k, Math.round(v)])),
    };
    manifest.bindings = shareBindings(opts.cacheDir, join(outDir, 'app.js'));
    writeFileSync(join(outDir, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    const dir = join(opts.cacheDir, key);
    try {
      renameSync(outDir, dir);
    } catch (err) {
      // Another process finished the same artifact first: theirs is as good as ours.
      const existing = readCompiled(opts.cacheDir, sha256);
      if (existing) return existing;
      throw err;
    }
    return { key, dir, manifest, cached: false };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function runChild(
  job: CompileJob,
  work: string,
  timeoutMs: number,
  onProgress?: (stage: string) => void,
): Promise<Extract<CompileChildMessage, { type: 'done' }>> {
  return new Promise((resolvePromise, reject) => {
    let child: ChildProcess;
    try {
      child = fork(CHILD, [], {
        cwd: work,
        // Its own process group, so the time limit also stops the wizer process it spawns.
        detached: true,
        execArgv: [],
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TMPDIR: join(work, 'tmp'), NODE_ENV: 'production' },
      });
    } catch (err) {
      reject(new CompileError('internal', `cannot start the compiler: ${(err as Error).message}`));
      return;
    }
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    let settled = false;
    const killGroup = () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    const finish = (err: Error | null, value?: Extract<CompileChildMessage, { type: 'done' }>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      killGroup();
      if (err) reject(err);
      else resolvePromise(value!);
    };
    const timer = setTimeout(
      () => finish(new CompileError('timeout', `compilation exceeded its time limit of ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.on('message', (msg: CompileChildMessage) => {
      if (msg.type === 'progress') onProgress?.(msg.stage);
      else if (msg.type === 'done') finish(null, msg);
      else if (msg.type === 'failed') finish(new CompileError(msg.stage, msg.message));
    });
    child.once('exit', (code, signal) => {
      const last = stderr.trim().split('\n').pop() ?? '';
      finish(new CompileError('internal', `the compiler exited (${signal ?? code}) before finishing${last ? `: ${last}` : ''}`));
    });
    child.send(job);
  });
}
