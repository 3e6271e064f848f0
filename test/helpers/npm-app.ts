/**
 * Builds a deployable app directory from an npm package the project has installed (a devDependency):
 * the package and everything it depends on are copied into the app's own node_modules, so the replica
 * runs it offline from its artifact, as a developer would deploy it with `npm install` done.
 */
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The directory of package `name` as Node would resolve it from `from` (walking up node_modules). */
function resolvePackage(name: string, from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dirname(dir) === dir) throw new Error(`package ${name} is not installed (npm ci first)`);
  }
}

/** Copies `name` and its production dependencies from `projectRoot`'s node_modules into `appDir/node_modules`. */
export function copyPackageInto(appDir: string, name: string, projectRoot: string): number {
  const done = new Map<string, string>();
  const todo: Array<{ name: string; from: string }> = [{ name, from: projectRoot }];
  while (todo.length > 0) {
    const next = todo.pop() as { name: string; from: string };
    const dir = resolvePackage(next.name, next.from);
    if (done.has(dir)) continue;
    done.set(dir, next.name);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    for (const dep of Object.keys(pkg.dependencies ?? {})) todo.push({ name: dep, from: dir });
  }
  for (const [dir, pkgName] of done) {
    // Hoisted packages land flat; a package nested under another one's node_modules is copied with its parent.
    if (dir.slice(projectRoot.length).split('/node_modules/').length > 2) continue;
    const target = join(appDir, 'node_modules', pkgName);
    mkdirSync(dirname(target), { recursive: true });
    cpSync(dir, target, { recursive: true, dereference: false, filter: (src) => !src.includes('/.bin') });
  }
  return done.size;
}
