/**
 * ACME issuance with acme-client. The account key lives in the registry, so every gateway of the network
 * uses one account per directory; challenges are answered by every gateway from the registry (HTTP-01 on
 * port 80's path, TLS-ALPN-01 through the `acme-tls/1` ALPN path of the HTTPS listener).
 */
import { readFileSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import acme from 'acme-client';
import type { Logger } from 'pino';
import { keys } from '../protocol/keys.js';
import { createIfAbsent, type Registry } from '../protocol/registry.js';
import type { ChallengeSink, Issued, Issuer } from './issuer.js';

export interface AcmeOptions {
  directoryUrl: string;
  /** PEM file of the CA that signs the ACME server's own HTTPS certificate (Pebble, private CAs). */
  caFile?: string;
  email?: string;
  /** Preferred challenge; the other is used if the CA does not offer it. */
  challenge: 'http-01' | 'tls-alpn-01';
}

interface AccountRecord {
  keyPem: string;
  url?: string;
}

export class AcmeIssuer implements Issuer {
  readonly kind = 'acme' as const;
  private client: acme.Client | null = null;

  constructor(
    private readonly registry: Registry,
    private readonly opts: AcmeOptions,
    private readonly log: Logger,
  ) {
    if (opts.caFile) {
      // acme-client talks to the directory through its axios instance.
      acme.axios.defaults.httpsAgent = new HttpsAgent({ ca: readFileSync(opts.caFile), keepAlive: true });
    }
  }

  /** One account per directory for the whole network: the first gateway to create it wins, others reuse it. */
  private async account(): Promise<acme.Client> {
    if (this.client) return this.client;
    const key = keys.acmeAccount(this.opts.directoryUrl);
    let record = (await this.registry.get(key))?.value;
    if (!record) {
      const keyPem = (await acme.crypto.createPrivateEcdsaKey()).toString();
      await createIfAbsent(this.registry, key, JSON.stringify({ keyPem } satisfies AccountRecord));
      record = (await this.registry.get(key))?.value as string;
    }
    const saved = JSON.parse(record) as AccountRecord;
    const client = new acme.Client({
      directoryUrl: this.opts.directoryUrl,
      accountKey: saved.keyPem,
      ...(saved.url ? { accountUrl: saved.url } : {}),
      backoffMin: 100,
      backoffMax: 1_000,
      backoffAttempts: 30,
    });
    if (!saved.url) {
      await client.createAccount({ termsOfServiceAgreed: true, ...(this.opts.email ? { contact: [`mailto:${this.opts.email}`] } : {}) });
      await this.registry
        .put(key, JSON.stringify({ keyPem: saved.keyPem, url: client.getAccountUrl() } satisfies AccountRecord))
        .catch(() => {});
    }
    this.client = client;
    return client;
  }

  async issue(host: string, sink: ChallengeSink): Promise<Issued> {
    const client = await this.account();
    const [keyPem, csr] = await acme.crypto.createCsr({ commonName: host, altNames: [host] }, await acme.crypto.createPrivateEcdsaKey());
    await sink.progress('ordering', `order placed with ${this.opts.directoryUrl}`);
    const priority = this.opts.challenge === 'tls-alpn-01' ? ['tls-alpn-01', 'http-01'] : ['http-01', 'tls-alpn-01'];
    const certPem = await client.auto({
      csr,
      termsOfServiceAgreed: true,
      challengePriority: priority,
      // The CA validates from outside; our own pre-check would resolve test names locally and fail.
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        // acme-client's types predate TLS-ALPN-01 support in its runtime.
        const type = challenge.type as string;
        await sink.progress('challenge', `${type} challenge for ${authz.identifier.value}`);
        if (type === 'http-01') await sink.putHttp01(challenge.token, keyAuthorization);
        else if (type === 'tls-alpn-01') {
          const [alpnKey, alpnCert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization);
          await sink.putAlpn(authz.identifier.value, alpnCert.toString(), alpnKey.toString());
        } else throw new Error(`unsupported challenge ${type}`);
      },
      challengeRemoveFn: async (authz, challenge) => {
        const type = challenge.type as string;
        if (type === 'http-01') await sink.removeHttp01(challenge.token);
        else if (type === 'tls-alpn-01') await sink.removeAlpn(authz.identifier.value);
      },
    });
    this.log.info({ host }, 'certificate issued by ACME');
    return { certPem, keyPem: keyPem.toString() };
  }
}
