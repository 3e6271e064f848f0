#!/usr/bin/env node
// Bundles the UI (ui/app.ts with Preact, htm, uPlot and @noble) into dist/ui with rolldown, beside its
// page and stylesheet. The agents serve dist/ui under /ui; nothing is fetched from elsewhere at run time.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'rolldown';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'ui');
mkdirSync(out, { recursive: true });
await build({
  input: join(root, 'ui', 'app.ts'),
  platform: 'browser',
  output: { file: join(out, 'app.js'), format: 'esm', minify: true },
  logLevel: 'warn',
});
copyFileSync(join(root, 'ui', 'index.html'), join(out, 'index.html'));
const uplotCss = readFileSync(join(root, 'node_modules', 'uplot', 'dist', 'uPlot.min.css'), 'utf8');
writeFileSync(join(out, 'app.css'), `${readFileSync(join(root, 'ui', 'app.css'), 'utf8')}\n${uplotCss}\n`);
