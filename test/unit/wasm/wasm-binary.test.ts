/** The memory limit is written into the module itself: real modules, instantiated by V8, must refuse to grow past it. */
import { describe, expect, it } from 'vitest';
import { WASM_PAGE, withMemoryMaximum } from '../../../quorum-agent/wasm/wasm-binary.js';

/** A module defining one memory (min pages, optional max) exported as "memory", with a type section before it. */
function moduleWithMemory(min: number, max?: number): Uint8Array {
  const limits = max === undefined ? [0x00, min] : [0x01, min, max];
  const memorySection = [0x05, limits.length + 1, 0x01, ...limits];
  const typeSection = [0x01, 0x04, 0x01, 0x60, 0x00, 0x00]; // one type: () -> ()
  const exportSection = [0x07, 0x0a, 0x01, 0x06, ...Buffer.from('memory'), 0x02, 0x00];
  return Uint8Array.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...typeSection, ...memorySection, ...exportSection]);
}

function memoryOf(bytes: Uint8Array): { buffer: ArrayBuffer; grow(n: number): number } {
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes));
  return instance.exports['memory'] as { buffer: ArrayBuffer; grow(n: number): number };
}

describe('withMemoryMaximum', () => {
  it('caps a memory that had no maximum', () => {
    const original = moduleWithMemory(1);
    expect(memoryOf(original).grow(5)).toBe(1); // unlimited before
    const { bytes, initialPages } = withMemoryMaximum(original, 3);
    expect(initialPages).toEqual([1]);
    const mem = memoryOf(bytes);
    expect(mem.grow(2)).toBe(1);
    expect(mem.buffer.byteLength).toBe(3 * WASM_PAGE);
    expect(() => mem.grow(1)).toThrow(RangeError);
  });

  it('lowers a larger maximum and keeps a smaller one', () => {
    const lowered = memoryOf(withMemoryMaximum(moduleWithMemory(2, 100), 4).bytes);
    expect(lowered.grow(2)).toBe(2);
    expect(() => lowered.grow(1)).toThrow(RangeError);
    const kept = memoryOf(withMemoryMaximum(moduleWithMemory(2, 3), 50).bytes);
    expect(kept.grow(1)).toBe(2);
    expect(() => kept.grow(1)).toThrow(RangeError);
  });

  it('never sets a maximum below the initial size, and reports it so the caller can refuse the limit', () => {
    const { bytes, initialPages } = withMemoryMaximum(moduleWithMemory(5), 2);
    expect(initialPages).toEqual([5]);
    expect(memoryOf(bytes).buffer.byteLength).toBe(5 * WASM_PAGE);
  });

  it('leaves a module without a memory section unchanged and refuses non-wasm bytes', () => {
    const noMemory = Uint8Array.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
    expect(withMemoryMaximum(noMemory, 4).bytes).toBe(noMemory);
    expect(() => withMemoryMaximum(Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]), 4)).toThrow(/not a wasm module/);
  });
});
