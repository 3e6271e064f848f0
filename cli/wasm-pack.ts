/**
 * What `allegra deploy` uploads for a `--driver wasm` instance: the app module bundled on the developer's
 * machine, where its imports resolve (`import { Hono } from 'hono'` from the project's node_modules), into
 * one self-contained ES module `app.js`. The network compiles that file to a WebAssembly component; it never
 * needs the developer's node_modules. The same source always packs to the same bytes, so every agent's
 * compile cache (keyed by the artifact's hash) recognises a redeploy of unchanged code.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { rolldown } from 'rolldown';
import { findEntry, GUEST_CONDITIONS, MAX_BUNDLE_BYTES } from '../quorum-agent/wasm/bundle.js';
import { type Bundle, bundle } from './bundle.js';
import { CliError } from './output.js';

const BUILTINS = new Set(builtinModules);

/** Bundles the module at `path` (a file, or a directory with an entry) into one ES module. */
export async function bundleWasmApp(path: string): Promise<string> {
  let entry: string;
  try {
    entry = findEntry(resolve(path)).entry;
  } catch (err) {
    throw new CliError(`cannot deploy ${path} as a wasm app: ${(err as Error).message}`, 2);
  }
  let refusal: string | undefined;
  const build = await rolldown({
    input: entry,
    platform: 'browser',
    logLevel: 'silent',
    resolve: { conditionNames: GUEST_CONDITIONS },
    plugins: [
      {
        name: 'allegra-no-builtins',
        resolveId(spec) {
          const bare = spec.startsWith('node:') ? spec.slice(5) : spec;
          if (spec.startsWith('node:') || BUILTINS.has(bare.split('/')[0] ?? '')) {
            refusal = `import '${spec}': Node built-in modules are not available to wasm apps`;
            throw new Error(refusal);
          }
          return null;
        },
      },
    ],
  }).catch((err: Error) => {
    throw new CliError(`cannot bundle ${path} as a wasm app: ${refusal ?? err.message.split('\n')[0]}`, 2);
  });
  try {
    const { output } = await build.generate({ format: 'esm', codeSplitting: false });
    const chunk = output.find((o) => o.type === 'chunk');
    if (chunk?.type !== 'chunk') throw new CliError(`bundling ${path} produced no module`, 2);
    if (Buffer.byteLength(chunk.code) > MAX_BUNDLE_BYTES)
      throw new CliError(`the bundled app is larger than ${MAX_BUNDLE_BYTES} bytes, the most a wasm app may be`, 2);
    return chunk.code;
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`cannot bundle ${path} as a wasm app: ${refusal ?? (err as Error).message.split('\n')[0]}`, 2);
  } finally {
    await build.close();
  }
}

/**
 * The artifact of a wasm app: a gzipped tar holding the bundled `app.js` alone, packed reproducibly (in its
 * own temporary file, like every bundle; the caller's `cleanup` removes it).
 */
export async function packWasmApp(path: string, opts: { maxBytes?: number } = {}): Promise<Bundle & { sourceBytes: number }> {
  const code = await bundleWasmApp(path);
  const dir = mkdtempSync(join(tmpdir(), 'allegra-wasm-pack-'));
  try {
    writeFileSync(join(dir, 'app.js'), code);
    return { ...(await bundle(dir, { ...opts, mtime: new Date(0) })), sourceBytes: Buffer.byteLength(code) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
