/**
 * Bundles a wasm app's source into the single ES module componentize-js evaluates. The bundle is confined
 * to the app's own directory: every import must resolve to a file inside it (its own node_modules
 * included), so compiling an app can never read the host's files into the guest. Node built-ins do not
 * exist in the sandbox and are refused with a clear reason rather than failing at run time.
 */
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { rolldown } from 'rolldown';
import { GUEST_GLUE, RESPONSE_STREAM_SPECIFIER, USER_ENTRY_SPECIFIER } from './world.js';

/** A compile failure whose message is meant for the app's developer (one line, no stack). */
export class CompileError extends Error {
  constructor(
    readonly stage: 'entry' | 'bundle' | 'componentize' | 'transpile' | 'timeout' | 'internal',
    message: string,
  ) {
    super(message);
    this.name = 'CompileError';
  }
}

const GLUE_ID = '\0allegra-guest-glue';
const ENTRY_CANDIDATES = ['index.js', 'index.mjs', 'index.ts', 'app.js', 'app.mjs', 'app.ts', 'worker.js', 'src/index.js', 'src/index.ts'];
const BUILTINS = new Set(builtinModules);
/** Export conditions a guest bundle resolves packages with: the Workers-style builds of libraries like Hono. */
export const GUEST_CONDITIONS = ['workerd', 'worker', 'browser', 'import', 'module', 'default'];
/** Larger bundles are refused: the engine evaluates them at pre-initialisation and holds them in memory. */
export const MAX_BUNDLE_BYTES = 16 * 1024 * 1024;

function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !rel.startsWith(sep));
}

/** The app's root directory and entry file: a file itself, or a directory's package.json main/module or a conventional name. */
export function findEntry(source: string): { root: string; entry: string } {
  const abs = resolve(source);
  if (!existsSync(abs)) throw new CompileError('entry', `${source} does not exist`);
  if (statSync(abs).isFile()) return { root: realpathSync(dirname(abs)), entry: realpathSync(abs) };
  const root = realpathSync(abs);
  const pkgFile = join(root, 'package.json');
  if (existsSync(pkgFile)) {
    let pkg: { module?: unknown; main?: unknown };
    try {
      pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as typeof pkg;
    } catch {
      throw new CompileError('entry', 'package.json is not valid JSON');
    }
    for (const field of [pkg.module, pkg.main]) {
      if (typeof field !== 'string') continue;
      const file = resolve(root, field);
      if (!existsSync(file)) continue;
      const real = realpathSync(file);
      if (!inside(root, real)) throw new CompileError('entry', `package.json points outside the app directory: ${field}`);
      return { root, entry: real };
    }
  }
  for (const name of ENTRY_CANDIDATES) {
    const file = join(root, name);
    if (existsSync(file) && statSync(file).isFile()) return { root, entry: realpathSync(file) };
  }
  throw new CompileError('entry', `no entry module in ${source} (package.json "module"/"main", or one of ${ENTRY_CANDIDATES.join(', ')})`);
}

/** One line from a bundler error: the first line of its message, with paths made relative to the app. */
function oneLine(err: unknown, root: string): string {
  const text = String((err as Error)?.message ?? err)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^\[?plugin/i.test(l));
  return (text.slice(0, 3).join(' ') || 'bundling failed').replaceAll(`${root}${sep}`, '').slice(0, 500);
}

/** Returns the bundled source of the guest: the glue plus the app and everything it imports. */
export async function bundleApp(source: string): Promise<{ code: string; entry: string; root: string }> {
  const { root, entry } = findEntry(source);
  const refusal: { message?: string } = {};
  let bundle: Awaited<ReturnType<typeof rolldown>> | undefined;
  try {
    bundle = await rolldown({
      input: GLUE_ID,
      cwd: root,
      platform: 'browser',
      logLevel: 'silent',
      resolve: { conditionNames: GUEST_CONDITIONS },
      plugins: [
        {
          name: 'allegra-confine',
          async resolveId(spec, importer) {
            if (spec === GLUE_ID) return GLUE_ID;
            if (spec === USER_ENTRY_SPECIFIER) return entry;
            // The host's interface: resolved by componentize-js against the world, not by the bundler.
            if (spec === RESPONSE_STREAM_SPECIFIER && importer === GLUE_ID) return { id: spec, external: true };
            const bare = spec.startsWith('node:') ? spec.slice(5) : spec;
            if (spec.startsWith('node:') || BUILTINS.has(bare.split('/')[0] ?? '')) {
              refusal.message = `import '${spec}': Node built-in modules are not available to wasm apps`;
              throw new Error(refusal.message);
            }
            const resolved = await this.resolve(spec, importer, { skipSelf: true });
            if (!resolved) return null;
            if (resolved.external) {
              refusal.message = `import '${spec}' is external; wasm apps must bundle every dependency`;
              throw new Error(refusal.message);
            }
            const file = resolved.id.split('?')[0] as string;
            const real = existsSync(file) ? realpathSync(file) : file;
            if (!inside(root, real)) {
              refusal.message = `import '${spec}' resolves outside the app directory`;
              throw new Error(refusal.message);
            }
            return resolved;
          },
          load(id) {
            return id === GLUE_ID ? GUEST_GLUE : null;
          },
        },
      ],
    });
    const { output } = await bundle.generate({ format: 'esm', codeSplitting: false });
    const chunk = output.find((o) => o.type === 'chunk');
    if (chunk?.type !== 'chunk') throw new Error('the bundler produced no module');
    if (Buffer.byteLength(chunk.code) > MAX_BUNDLE_BYTES) throw new CompileError('bundle', `bundle exceeds ${MAX_BUNDLE_BYTES} bytes`);
    return { code: chunk.code, entry, root };
  } catch (err) {
    if (err instanceof CompileError) throw err;
    throw new CompileError('bundle', refusal.message ?? oneLine(err, root));
  } finally {
    await bundle?.close();
  }
}
