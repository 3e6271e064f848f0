/** The wasm runtime's public surface: compile an app once per artifact, run it in a wasm host. */

export { WasmHostClient, WasmHostRequestError } from './client.js';
export { type CompiledApp, CompileError, type CompileOptions, cacheKey, compileApp, hashSource, readCompiled } from './compile.js';
export type { HostStats, LoadRequest, LoadResult } from './host.js';
export { DEFAULT_LIMITS, type ReplicaLimits } from './limits.js';
export type { ReplicaStats } from './replica.js';
export type { InstantiateMode } from './worker-protocol.js';
