/**
 * When an instance has no command, guess the obvious one from the deployed files, the way a PaaS
 * buildpack would: an npm start script, then a conventional Node entry file, then a single executable.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export function inferCommand(dir: string): string | undefined {
  const pkgPath = join(dir, 'package.json');
  if (existsSync(pkgPath)) {
    try {
      const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { scripts?: { start?: string }; main?: string };
      if (pkg.scripts?.start) return 'npm start --silent';
      if (pkg.main) return `node ${JSON.stringify(pkg.main)}`;
    } catch {
      /* not JSON: fall through to file conventions */
    }
  }
  for (const file of ['server.mjs', 'server.js', 'index.mjs', 'index.js', 'main.mjs', 'main.js', 'app.js']) {
    if (existsSync(join(dir, file))) return `node ${file}`;
  }
  const entries = readdirSync(dir).filter((f) => !f.startsWith('.'));
  if (entries.length === 1) {
    const only = entries[0] as string;
    if (/\.(m?js|cjs)$/.test(only)) return `node ${JSON.stringify(only)}`;
    if (/\.py$/.test(only)) return `python3 ${JSON.stringify(only)}`;
    if (statSync(join(dir, only)).mode & 0o111) return `./${only}`;
  }
  return undefined;
}
