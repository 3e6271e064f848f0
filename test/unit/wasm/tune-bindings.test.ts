import { describe, expect, it, vi } from 'vitest';
import { tuneBindings } from '../../../quorum-agent/wasm/tune-bindings.js';

const CHECK = '    if (!globalThis?.process?.env?.JCO_DEBUG) { return; }';

describe('tuneBindings', () => {
  it('turns the per-call environment lookup of the debug logger into a constant', () => {
    const js = `const _debugLog = (...args) => {\n${CHECK}\n    console.debug(...args);\n};\n`;
    const out = tuneBindings(js);
    expect(out.tuned).toBe(true);
    expect(out.js).not.toContain('JCO_DEBUG');
    // The logger still parses and now returns before logging, even with the variable set.
    const spy = vi.spyOn(console, 'debug').mockImplementation(() => undefined);
    const saved = process.env.JCO_DEBUG;
    process.env.JCO_DEBUG = '1';
    try {
      (new Function(`${js}; return _debugLog;`)() as (...a: unknown[]) => void)('before');
      expect(spy).toHaveBeenCalledTimes(1);
      (new Function(`${out.js}; return _debugLog;`)() as (...a: unknown[]) => void)('after');
      expect(spy).toHaveBeenCalledTimes(1);
    } finally {
      if (saved === undefined) delete process.env.JCO_DEBUG;
      else process.env.JCO_DEBUG = saved;
      spy.mockRestore();
    }
  });

  it('changes nothing when the line is absent or ambiguous', () => {
    expect(tuneBindings('const x = 1;')).toEqual({ js: 'const x = 1;', tuned: false });
    const twice = `${CHECK}\n${CHECK}\n`;
    expect(tuneBindings(twice)).toEqual({ js: twice, tuned: false });
  });
});
