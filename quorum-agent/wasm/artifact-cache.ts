/**
 * Compiled `WebAssembly.Module`s of loaded artifacts, shared by every replica of the artifact in this
 * process: V8 compiles a module once and each worker it is posted to instantiates the same machine code.
 * Keyed by artifact directory and memory limit (the limit is written into the module's memory section).
 * Entries are reference-counted; a few unused ones are kept so that a replica loaded again soon after
 * (scale from zero) does not recompile.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CompiledManifest } from './compile.js';
import { WASM_PAGE, withMemoryMaximum } from './wasm-binary.js';

export interface LoadedArtifact {
  /** Artifact directory and memory limit: what makes two loads interchangeable. */
  key: string;
  dir: string;
  bindingsUrl: string;
  modules: Record<string, WebAssembly.Module>;
  memoryLimitBytes: number;
  /** Bytes of linear memory the app needs before its first request. */
  initialMemoryBytes: number;
  compileMs: number;
}

const BINDINGS = /^\.\.\/bindings\/[0-9a-f]{64}\.js$/;

interface Entry {
  promise: Promise<LoadedArtifact>;
  refs: number;
  lastUsed: number;
}

export class ArtifactCache {
  private readonly entries = new Map<string, Entry>();
  constructor(private readonly keepUnused = 16) {}

  acquire(dir: string, memoryLimitBytes: number): Promise<LoadedArtifact> {
    const key = `${dir}\0${memoryLimitBytes}`;
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { promise: load(dir, memoryLimitBytes), refs: 0, lastUsed: Date.now() };
      this.entries.set(key, entry);
      entry.promise.catch(() => this.entries.delete(key));
    }
    entry.refs++;
    entry.lastUsed = Date.now();
    return entry.promise;
  }

  release(dir: string, memoryLimitBytes: number): void {
    const entry = this.entries.get(`${dir}\0${memoryLimitBytes}`);
    if (!entry) return;
    entry.refs = Math.max(0, entry.refs - 1);
    entry.lastUsed = Date.now();
    const unused = [...this.entries.entries()].filter(([, e]) => e.refs === 0).sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    for (const [key] of unused.slice(0, Math.max(0, unused.length - this.keepUnused))) this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}

async function load(dir: string, memoryLimitBytes: number): Promise<LoadedArtifact> {
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as CompiledManifest;
  if (!BINDINGS.test(manifest.bindings)) throw new Error(`bad bindings path in manifest: ${manifest.bindings}`);
  const t = performance.now();
  const maxPages = Math.floor(memoryLimitBytes / WASM_PAGE);
  const modules: Record<string, WebAssembly.Module> = {};
  let initialPages = 0;
  for (const name of manifest.coreModules) {
    if (!/^[\w.-]+\.wasm$/.test(name)) throw new Error(`bad core module name in manifest: ${name}`);
    const limited = withMemoryMaximum(readFileSync(join(dir, name)), maxPages);
    initialPages += limited.initialPages.reduce((a, b) => a + b, 0);
    modules[name] = await WebAssembly.compile(limited.bytes);
  }
  if (initialPages > maxPages) {
    throw new Error(`memory limit ${memoryLimitBytes} bytes is below the ${initialPages * WASM_PAGE} bytes the app needs to start`);
  }
  return {
    key: `${dir}\0${memoryLimitBytes}`,
    dir,
    bindingsUrl: pathToFileURL(join(dir, manifest.bindings)).href,
    modules,
    memoryLimitBytes: maxPages * WASM_PAGE,
    initialMemoryBytes: initialPages * WASM_PAGE,
    compileMs: performance.now() - t,
  };
}
