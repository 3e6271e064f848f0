/**
 * Certificates for a fleet of gateways, Caddy-style. Every gateway runs a manager that
 *  - keeps the network's certificates (`certs/`) in an SNI cache, and the pending challenge answers
 *    (`acme/…`) in memory, all from registry watches;
 *  - looks for exposed routes (routes with `tls`) whose certificate is missing or due for renewal (two
 *    thirds into its lifetime), and takes that host's issuance lock (a key under this gateway's lease, so a
 *    dead issuer's lock expires) before ordering: two gateways racing produce one order;
 *  - retries failures with exponential backoff, serving the old certificate until a new one is stored.
 * Hosts without a route never get an order: the SNI path only reads the cache (no on-demand issuance).
 */

import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { keys, PREFIX } from '../protocol/keys.js';
import { createIfAbsent, type Lease, type Registry } from '../protocol/registry.js';
import { certRecord, routeRecord } from '../protocol/schemas.js';
import type { CertRecord, CertStatusRecord, RouteRecord } from '../protocol/types.js';
import { jsonRecord, Mirror } from '../registry/mirror.js';
import type { ChallengeSink, Issuer } from './issuer.js';

export interface CertManagerOptions {
  registry: Registry;
  issuer: Issuer;
  /** Identifies this gateway as a lock holder. */
  holderId: string;
  log: Logger;
  /** How often hosts are checked for missing or expiring certificates. */
  checkIntervalMs?: number;
  /** First retry delay after a failed issuance; doubles up to maxBackoffMs. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Issuance locks expire with this lease if the issuer dies. */
  lockTtlMs?: number;
}

interface Backoff {
  until: number;
  delay: number;
}

export class CertManager {
  private readonly certs: Mirror<CertRecord>;
  private readonly routes: Mirror<RouteRecord>;
  private readonly http01: Mirror<string>;
  private readonly alpn: Mirror<{ certPem: string; keyPem: string }>;
  private readonly contexts = new Map<string, SecureContext>();
  private readonly alpnContexts = new Map<string, SecureContext>();
  private readonly inFlight = new Set<string>();
  private readonly backoff = new Map<string, Backoff>();
  private lease: Lease | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly opts: CertManagerOptions) {
    const { registry } = opts;
    this.certs = new Mirror(registry, PREFIX.certs, jsonRecord(certRecord));
    this.routes = new Mirror(registry, PREFIX.routes, jsonRecord(routeRecord));
    this.http01 = new Mirror(registry, PREFIX.acmeHttp01, (raw) => raw);
    this.alpn = new Mirror(registry, PREFIX.acmeAlpn, (raw) => {
      try {
        return JSON.parse(raw) as { certPem: string; keyPem: string };
      } catch {
        return undefined;
      }
    });
  }

  async start(): Promise<this> {
    this.certs.onChange((changes) => {
      for (const c of changes) this.contexts.delete(c.key.slice(PREFIX.certs.length));
    });
    this.alpn.onChange((changes) => {
      for (const c of changes) this.alpnContexts.delete(c.key.slice(PREFIX.acmeAlpn.length));
    });
    this.routes.onChange(() => this.check());
    await Promise.all([this.certs.start(), this.routes.start(), this.http01.start(), this.alpn.start()]);
    this.lease = await this.opts.registry.grantLease(this.opts.lockTtlMs ?? 15_000);
    this.timer = setInterval(() => this.check(), this.opts.checkIntervalMs ?? 2_000);
    this.timer.unref();
    this.check();
    return this;
  }

  /** The certificate to present for `servername`, if the network has one. Never triggers issuance. */
  sniContext(servername: string): SecureContext | undefined {
    const host = servername.toLowerCase();
    let ctx = this.contexts.get(host);
    if (ctx) return ctx;
    const rec = this.certs.get(keys.cert(host));
    if (!rec) return undefined;
    ctx = createSecureContext({ cert: rec.certPem, key: rec.keyPem });
    this.contexts.set(host, ctx);
    return ctx;
  }

  hasCertificate(host: string): boolean {
    return this.certs.get(keys.cert(host)) !== undefined;
  }

  /** The TLS-ALPN-01 challenge certificate for `servername`, while a validation is pending. */
  alpnContext(servername: string): SecureContext | undefined {
    const host = servername.toLowerCase();
    let ctx = this.alpnContexts.get(host);
    if (ctx) return ctx;
    const rec = this.alpn.get(keys.acmeAlpn(host));
    if (!rec) return undefined;
    ctx = createSecureContext({ cert: rec.certPem, key: rec.keyPem });
    this.alpnContexts.set(host, ctx);
    return ctx;
  }

  /** The HTTP-01 key authorization for `token`, while a validation is pending. */
  http01Answer(token: string): string | undefined {
    return this.http01.get(keys.acmeHttp01(token));
  }

  /** Finds exposed hosts whose certificate is missing or due, and issues for them. */
  private check(): void {
    if (this.stopped || !this.lease) return;
    const now = Date.now();
    for (const route of this.routes.values()) {
      if (!route.tls) continue;
      const cert = this.certs.get(keys.cert(route.host));
      if (cert && now < cert.renewAfter) continue;
      if (this.inFlight.has(route.host) || (this.backoff.get(route.host)?.until ?? 0) > now) continue;
      void this.issue(route.host);
    }
  }

  private async setStatus(host: string, state: CertStatusRecord['state'], detail: string, retryAt?: number): Promise<void> {
    const rec: CertStatusRecord = { host, state, detail, updatedAt: Date.now(), ...(retryAt ? { retryAt } : {}) };
    await this.opts.registry.put(keys.certStatus(host), JSON.stringify(rec)).catch(() => {});
  }

  private async issue(host: string): Promise<void> {
    const { registry, log, holderId } = this.opts;
    const lease = this.lease;
    if (!lease) return;
    this.inFlight.add(host);
    const lockKey = keys.certLock(host);
    let locked = false;
    try {
      locked = await createIfAbsent(registry, lockKey, holderId, lease.id);
      if (!locked) return; // another gateway is on it
      // Someone may have finished between our check and our lock: look again at the committed state.
      const current = (await registry.get(keys.cert(host)))?.value;
      const fresh = current ? jsonRecord(certRecord)(current) : undefined;
      if (fresh && Date.now() < fresh.renewAfter) return;
      const route = (await registry.get(keys.route(host)))?.value;
      if (!route || !jsonRecord(routeRecord)(route)?.tls) return; // unexposed meanwhile: no order
      log.info({ host, renewal: Boolean(fresh) }, 'ordering certificate');
      const sink: ChallengeSink = {
        putHttp01: (token, keyAuthorization) =>
          registry.put(keys.acmeHttp01(token), keyAuthorization, { lease: lease.id }).then(() => undefined),
        removeHttp01: (token) => registry.delete(keys.acmeHttp01(token)).then(() => undefined),
        putAlpn: (h, certPem, keyPem) =>
          registry.put(keys.acmeAlpn(h), JSON.stringify({ certPem, keyPem }), { lease: lease.id }).then(() => undefined),
        removeAlpn: (h) => registry.delete(keys.acmeAlpn(h)).then(() => undefined),
        progress: (state, detail) => this.setStatus(host, state, detail),
      };
      await this.setStatus(host, 'ordering', `${this.opts.issuer.kind} issuer`);
      const issued = await this.opts.issuer.issue(host, sink);
      const x509 = new X509Certificate(issued.certPem);
      const notBefore = Date.parse(x509.validFrom);
      const notAfter = Date.parse(x509.validTo);
      const rec: CertRecord = {
        host,
        certPem: issued.certPem,
        keyPem: issued.keyPem,
        notBefore,
        notAfter,
        renewAfter: notBefore + Math.floor(((notAfter - notBefore) * 2) / 3),
        issuer: this.opts.issuer.kind,
        issuedAt: Date.now(),
      };
      await registry.put(keys.cert(host), JSON.stringify(rec));
      await this.setStatus(host, 'issued', `valid until ${new Date(notAfter).toISOString()}`);
      this.backoff.delete(host);
      log.info({ host, notAfter: new Date(notAfter).toISOString() }, 'certificate stored');
    } catch (err) {
      const prev = this.backoff.get(host);
      const delay = Math.min((prev?.delay ?? (this.opts.minBackoffMs ?? 1_000) / 2) * 2, this.opts.maxBackoffMs ?? 10 * 60_000);
      const until = Date.now() + delay;
      this.backoff.set(host, { until, delay });
      log.warn({ host, err: (err as Error).message, retryInMs: delay }, 'certificate issuance failed');
      await this.setStatus(host, 'failed', (err as Error).message, until);
    } finally {
      this.inFlight.delete(host);
      if (locked)
        await registry
          .txn({ compare: [{ key: lockKey, target: 'value', equals: holderId }], success: [{ type: 'delete', key: lockKey }] })
          .catch(() => {});
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const m of [this.certs, this.routes, this.http01, this.alpn]) m.close();
    await this.lease?.revoke().catch(() => {});
  }
}
