/**
 * Child process that compiles one wasm app: bundle → componentize (SpiderMonkey + pre-initialisation with
 * wizer) → transpile to core modules + JS bindings. It is a separate process because componentize-js
 * blocks its thread for tens of seconds (it runs wizer with spawnSync) and because the parent must be able
 * to stop it at its time limit (it kills this process group, wizer included).
 *
 * Protocol (IPC): parent sends { source, outDir }; child answers { type: 'progress', stage } messages and
 * one { type: 'done', ... } or { type: 'failed', stage, message }, then exits.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { componentize } from '@bytecodealliance/componentize-js';
import { transpileBytes } from '@bytecodealliance/jco-transpile';
import { bundleApp, CompileError } from './bundle.js';
import { tuneBindings } from './tune-bindings.js';
import { WORLD_NAME, WORLD_WIT } from './world.js';

export interface CompileJob {
  source: string;
  outDir: string;
}

export type CompileChildMessage =
  | { type: 'progress'; stage: 'bundle' | 'componentize' | 'transpile' }
  | { type: 'done'; coreModules: string[]; bundleBytes: number; componentBytes: number; stageMs: Record<string, number> }
  | { type: 'failed'; stage: CompileError['stage']; message: string };

function send(msg: CompileChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(msg, undefined, {}, () => resolve());
  });
}

/** componentize-js reports guest errors with wizer's whole output; keep the line that names the cause. */
function componentizeReason(err: unknown): string {
  const text = String((err as Error)?.message ?? err);
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const cause =
    lines.find((l) => /^(Error|TypeError|SyntaxError|ReferenceError|RangeError)\b/.test(l) && !l.includes('componentize.wizer')) ??
    lines.find((l) => /error/i.test(l)) ??
    lines[0] ??
    'componentize failed';
  return cause.replace(/^Error:\s*/, '').slice(0, 500);
}

async function run(job: CompileJob): Promise<CompileChildMessage> {
  const stageMs: Record<string, number> = {};
  let t = performance.now();
  await send({ type: 'progress', stage: 'bundle' });
  const bundled = await bundleApp(job.source);
  stageMs['bundle'] = performance.now() - t;

  // componentize-js maps the source file's directory as the guest's `/` during pre-initialisation, so the
  // source is written alone into an empty directory (the current one, a fresh temp dir).
  const work = join(process.cwd(), 'src');
  mkdirSync(work, { recursive: true });
  const sourcePath = join(work, 'app.js');
  writeFileSync(sourcePath, bundled.code);
  const witPath = join(process.cwd(), 'app.wit');
  writeFileSync(witPath, WORLD_WIT);

  t = performance.now();
  await send({ type: 'progress', stage: 'componentize' });
  let component: Uint8Array;
  try {
    ({ component } = await componentize({ sourcePath, witPath, worldName: WORLD_NAME, disableFeatures: ['http', 'fetch-event'] }));
  } catch (err) {
    throw new CompileError('componentize', componentizeReason(err));
  }
  stageMs['componentize'] = performance.now() - t;

  t = performance.now();
  await send({ type: 'progress', stage: 'transpile' });
  let files: Record<string, Uint8Array>;
  try {
    ({ files } = await transpileBytes(component, {
      name: 'app',
      instantiation: 'sync',
      wasiShim: false,
      emitTypescriptDeclarations: false,
      noComponentErrorWrapping: true,
    }));
  } catch (err) {
    throw new CompileError('transpile', String((err as Error)?.message ?? err).split('\n')[0] ?? 'transpile failed');
  }
  stageMs['transpile'] = performance.now() - t;
  mkdirSync(job.outDir, { recursive: true });
  const coreModules: string[] = [];
  for (const [name, bytes] of Object.entries(files)) {
    if (name.includes('/') || name.includes('..')) continue; // only the flat outputs: app.js and app.core*.wasm
    writeFileSync(join(job.outDir, name), name === 'app.js' ? tuneBindings(Buffer.from(bytes).toString('utf8')).js : bytes);
    if (name.endsWith('.wasm')) coreModules.push(name);
  }
  return {
    type: 'done',
    coreModules: coreModules.sort(),
    bundleBytes: Buffer.byteLength(bundled.code),
    componentBytes: component.length,
    stageMs,
  };
}

process.once('message', (job: CompileJob) => {
  run(job)
    .catch(
      (err: unknown): CompileChildMessage =>
        err instanceof CompileError
          ? { type: 'failed', stage: err.stage, message: err.message }
          : { type: 'failed', stage: 'internal', message: String((err as Error)?.message ?? err).split('\n')[0] ?? 'internal error' },
    )
    .then(async (result) => {
      await send(result);
      process.exit(0);
    });
});
