/**
 * One targeted edit of jco's generated bindings, applied at compile time. jco 1.35's `_debugLog` reads
 * `process.env.JCO_DEBUG` on every call, and the bindings call it several times for every import the
 * guest makes (StarlingMonkey reads the clock ~40 times per request): Node's `process.env` is a C++
 * interceptor, and profiling put a quarter of a warm request's CPU time there. Debug logging of the
 * bindings is of no use in the host, so the check becomes a constant. If a jco update changes the line,
 * nothing is replaced and the bindings still work (only slower); world.ts's toolchain tag pins the
 * version this was measured with.
 */

const DEBUG_CHECK = '    if (!globalThis?.process?.env?.JCO_DEBUG) { return; }';

export function tuneBindings(js: string): { js: string; tuned: boolean } {
  const at = js.indexOf(DEBUG_CHECK);
  if (at < 0 || js.indexOf(DEBUG_CHECK, at + 1) >= 0) return { js, tuned: false };
  return { js: js.replace(DEBUG_CHECK, '    return; // allegra: bindings debug logging off (tune-bindings.ts)'), tuned: true };
}
