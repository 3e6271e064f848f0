/**
 * Proof that an instance's owner controls a custom domain, before the network routes it or orders a
 * certificate for it. The token is derived from the owner's key and the domain, so nothing needs storing:
 * the owner publishes it either as a DNS TXT record `_allegra-challenge.<domain>` (checked through the
 * configured resolver) or at `http://<domain>/.well-known/allegra-domain-verification`.
 */
import { createHash } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { request } from 'undici';

export function domainToken(owner: string, domain: string): string {
  return createHash('sha256').update(`allegra-domain-v1:${owner}:${domain}`).digest('hex').slice(0, 32);
}

export interface DomainVerifier {
  /** Resolves to how control was shown, or undefined if it was not. */
  verify(domain: string, token: string): Promise<'dns' | 'http' | undefined>;
}

export class DnsHttpVerifier implements DomainVerifier {
  private readonly resolver = new Resolver({ timeout: 2_000, tries: 2 });

  /** `resolver`: `host:port` of the DNS server to ask (default: the system's). */
  constructor(resolver?: string) {
    if (resolver) this.resolver.setServers([resolver]);
  }

  async verify(domain: string, token: string): Promise<'dns' | 'http' | undefined> {
    try {
      const records = await this.resolver.resolveTxt(`_allegra-challenge.${domain}`);
      if (records.some((chunks) => chunks.join('') === token)) return 'dns';
    } catch {
      /* no TXT record: try HTTP */
    }
    try {
      const [address] = await this.resolver.resolve4(domain);
      if (!address) return undefined;
      const res = await request(`http://${address}/.well-known/allegra-domain-verification`, {
        headers: { host: domain },
        headersTimeout: 3_000,
        bodyTimeout: 3_000,
      });
      const body = (await res.body.text()).trim();
      if (res.statusCode === 200 && body.includes(token)) return 'http';
    } catch {
      /* unreachable: not proven */
    }
    return undefined;
  }
}
