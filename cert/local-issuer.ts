/** The devnet's issuer: certificates signed by the network's local CA (cert/local-ca.ts), no ACME. */
import type { Issued, Issuer } from './issuer.js';
import type { LocalCa } from './local-ca.js';

export class LocalCaIssuer implements Issuer {
  readonly kind = 'local' as const;
  constructor(
    private readonly ca: LocalCa,
    /** Certificate lifetime; short values exercise renewal. */
    private readonly validityMs = 7 * 24 * 3600 * 1000,
  ) {}

  async issue(host: string): Promise<Issued> {
    const issued = await this.ca.issue([host], { days: this.validityMs / (24 * 3600 * 1000) });
    // The full chain is stored, so every gateway serves leaf + root (cert/local-ca.ts).
    return { certPem: issued.chainPem, keyPem: issued.keyPem };
  }
}
