import { describe, expect, it } from 'vitest';
import { placement, type SandboxSupport } from '../../../quorum-agent/sandbox/support.js';

const cannot: SandboxSupport = { ok: false, reason: 'missing bwrap (Debian package bubblewrap)' };
const can = { ok: true } as SandboxSupport;
const owner = 'a'.repeat(64);

describe('placement', () => {
  it('sandboxes everyone where the host can, trusted owners included', () => {
    expect(placement(can, { trustedOwners: [owner], allowUnsandboxed: true }, owner)).toEqual({ mode: 'sandbox' });
  });

  it('refuses other people’s instances where the host cannot, with the reason', () => {
    const p = placement(cannot, { trustedOwners: [owner] }, 'b'.repeat(64));
    expect(p.mode).toBe('refuse');
    expect(p.mode === 'refuse' && p.reason).toMatch(/cannot sandbox replicas \(missing bwrap/);
    expect(placement(cannot, {}, owner).mode).toBe('refuse');
  });

  it('runs trusted owners, or everyone with --allow-unsandboxed, on the host', () => {
    expect(placement(cannot, { trustedOwners: [owner] }, owner)).toEqual({ mode: 'host' });
    expect(placement(cannot, { allowUnsandboxed: true }, 'c'.repeat(64))).toEqual({ mode: 'host' });
  });
});
