/**
 * Sets the maximum size of a core module's own linear memory by rewriting its memory section. This is how
 * the memory limit is enforced: `memory.grow` past the maximum fails inside the guest (SpiderMonkey then
 * reports out-of-memory or traps), so a runaway allocation can never take more than the limit from the
 * host. Only defined memories are touched; the bytes are otherwise copied unchanged.
 */

const MEMORY_SECTION = 5;
export const WASM_PAGE = 65536;

function readU32(b: Uint8Array, pos: number): [value: number, next: number] {
  let result = 0;
  let shift = 0;
  for (;;) {
    const byte = b[pos++];
    if (byte === undefined) throw new Error('truncated wasm module');
    result |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [result >>> 0, pos];
    shift += 7;
    if (shift > 28) throw new Error('bad LEB128 in wasm module');
  }
}

function writeU32(value: number): number[] {
  const out: number[] = [];
  let v = value >>> 0;
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

export interface MemoryLimitResult {
  bytes: Uint8Array;
  /** Initial pages of each defined memory, to refuse a limit below what the module needs to start. */
  initialPages: number[];
}

/** Returns the module with every defined memory's maximum set to `maxPages` (memories without a memory section are returned as is). */
export function withMemoryMaximum(module: Uint8Array, maxPages: number): MemoryLimitResult {
  if (module[0] !== 0 || module[1] !== 0x61 || module[2] !== 0x73 || module[3] !== 0x6d) throw new Error('not a wasm module');
  let pos = 8;
  while (pos < module.length) {
    const sectionStart = pos;
    const id = module[pos++]!;
    const [size, bodyStart] = readU32(module, pos);
    const bodyEnd = bodyStart + size;
    if (id === MEMORY_SECTION) {
      let p = bodyStart;
      const [count, afterCount] = readU32(module, p);
      p = afterCount;
      const body: number[] = writeU32(count);
      const initialPages: number[] = [];
      for (let i = 0; i < count; i++) {
        const flags = module[p++]!;
        if (flags & ~0x01) throw new Error('shared or 64-bit memories are not supported');
        const [min, afterMin] = readU32(module, p);
        p = afterMin;
        let max: number | undefined;
        if (flags & 0x01) [max, p] = readU32(module, p);
        initialPages.push(min);
        const limited = max === undefined ? maxPages : Math.min(max, maxPages);
        body.push(0x01, ...writeU32(min), ...writeU32(Math.max(min, limited)));
      }
      const section = [MEMORY_SECTION, ...writeU32(body.length), ...body];
      const out = new Uint8Array(sectionStart + section.length + (module.length - bodyEnd));
      out.set(module.subarray(0, sectionStart), 0);
      out.set(section, sectionStart);
      out.set(module.subarray(bodyEnd), sectionStart + section.length);
      return { bytes: out, initialPages };
    }
    pos = bodyEnd;
  }
  return { bytes: module, initialPages: [] };
}
