/**
 * The microbenchmark modules (dist/bench/hashing.js, routing.js, expose.js, replica-start.js, wasm.js, state.js, autoscale.js), each
 * exporting `main(opts: { quick: boolean }): Promise<string>` that returns a markdown section.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { MicroSection } from './report.js';

const MODULES = ['hashing', 'routing', 'expose', 'replica-start', 'wasm', 'state', 'autoscale'] as const;

export async function runMicroSections(quick: boolean, log: (msg: string) => void): Promise<MicroSection[]> {
  const out: MicroSection[] = [];
  for (const name of MODULES) {
    const url = new URL(`../${name}.js`, import.meta.url);
    const file = fileURLToPath(url);
    if (!existsSync(file)) {
      log(`[micro] ${name}: missing (${file} not built; bench/${name}.ts not written yet)`);
      out.push({ name, missing: `dist/bench/${name}.js is missing` });
      continue;
    }
    try {
      log(`[micro] running ${name}…`);
      const mod = (await import(url.href)) as { main?: (opts: { quick: boolean }) => Promise<string> };
      if (typeof mod.main !== 'function') throw new Error('does not export main()');
      out.push({ name, markdown: await mod.main({ quick }) });
    } catch (err) {
      log(`[micro] ${name}: ${(err as Error).message}`);
      out.push({ name, missing: `dist/bench/${name}.js failed: ${(err as Error).message}` });
    }
  }
  return out;
}
