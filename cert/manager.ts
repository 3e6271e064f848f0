/**
 * Certificates for a fleet of gateways, Caddy-style. Every gateway runs a manager that
 *  - keeps the network's certificates (`certs/`, public, readable by agents and the CLI) paired with their
 *    private keys (`cert-keys/`, gateways only) in an SNI cache, and the pending challenge answers (`acme/…`)
 *    in memory, all from registry watches. Certificate and key are written in one transaction; as the two
 *    prefixes are watched separately, a key is used only with the certificate it names by hash, and until
 *    both halves of a new pair have arrived the previous pair keeps being served;
 *  - looks for exposed routes (routes with `tls`) whose certificate is missing or due for renewal (two
 *    thirds into its lifetime), and takes that host's issuance lock (a key under this gateway's lease, so a
 *    dead issuer's lock expires) before ordering: two gateways racing produce one order;
 *  - retries failures with exponential backoff, serving the old certificate until a new one is stored.
 * Hosts without a route never get an order: the SNI path only reads the cache (no on-demand issuance).
 */

import { createHash, X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { keys, PREFIX } from '../protocol/keys.js';
import { createIfAbsent, type Lease, type Registry } from '../protocol/registry.js';
import { certKeyRecord, certRecord, routeRecord } from '../protocol/schemas.js';
import type { CertKeyRecord, CertRecord, CertStatusRecord, RouteRecord } from '../protocol/types.js';
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
  /**
   * Which route records the network serves (and with which settings). A gateway passes its routing core's
   * grant check (see `checkRoutesWith`); until one is set no certificate is ordered.
   */
  servedRoute?: (route: RouteRecord) => RouteRecord | undefined;
}

interface Backoff {
  until: number;
  delay: number;
}

export class CertManager {
  private readonly certs: Mirror<CertRecord>;
  private readonly certKeys: Mirror<CertKeyRecord>;
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
  /**
   * Decides whether a route record is one the network serves (its owner-signed grants check out), and with
   * which settings; the gateway plugs its routing core in. Orders are placed only for such routes, so a
   * forged route record cannot make the network ask a CA for a name.
   */
  private served: (route: RouteRecord) => RouteRecord | undefined;

  constructor(private readonly opts: CertManagerOptions) {
    const { registry } = opts;
    // Until told how to check routes (checkRoutesWith), none is trusted: no order is placed.
    this.served = opts.servedRoute ?? (() => undefined);
    this.certs = new Mirror(registry, PREFIX.certs, jsonRecord(certRecord));
    this.certKeys = new Mirror(registry, PREFIX.certKeys, jsonRecord(certKeyRecord));
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

  /** Only routes this check returns are considered for certificates (see `served`). */
  checkRoutesWith(check: (route: RouteRecord) => RouteRecord | undefined): void {
    this.served = check;
    this.check();
  }

  async start(): Promise<this> {
    await this.moveKeysOutOfCerts();
    this.certs.onChange((changes) => {
      for (const c of changes) this.refreshContext(c.key.slice(PREFIX.certs.length));
    });
    this.certKeys.onChange((changes) => {
      for (const c of changes) this.refreshContext(c.key.slice(PREFIX.certKeys.length));
    });
    this.alpn.onChange((changes) => {
      for (const c of changes) this.alpnContexts.delete(c.key.slice(PREFIX.acmeAlpn.length));
    });
    this.routes.onChange(() => this.check());
    await Promise.all([this.certs.start(), this.certKeys.start(), this.routes.start(), this.http01.start(), this.alpn.start()]);
    this.lease = await this.opts.registry.grantLease(this.opts.lockTtlMs ?? 15_000);
    this.timer = setInterval(() => this.check(), this.opts.checkIntervalMs ?? 2_000);
    this.timer.unref();
    this.check();
    return this;
  }

  /**
   * Registries written before certificates and keys were split kept the key inside `certs/<host>`, where
   * agents can read it: move each such key to `cert-keys/<host>` (one transaction per host, guarded by the
   * record's revision so a concurrent renewal wins).
   */
  private async moveKeysOutOfCerts(): Promise<void> {
    const { items } = await this.opts.registry.list(PREFIX.certs);
    for (const kv of items) {
      let legacy: { keyPem?: unknown } & Record<string, unknown>;
      try {
        legacy = JSON.parse(kv.value) as typeof legacy;
      } catch {
        continue;
      }
      const rec = certRecord.safeParse(legacy);
      if (typeof legacy.keyPem !== 'string' || !rec.success) continue;
      const key: CertKeyRecord = { host: rec.data.host, keyPem: legacy.keyPem, certSha256: sha256(rec.data.certPem) };
      await this.opts.registry.txn({
        compare: [{ key: kv.key, target: 'modRevision', equals: kv.modRevision }],
        success: [
          { type: 'put', key: kv.key, value: JSON.stringify(rec.data) },
          { type: 'put', key: keys.certKey(rec.data.host), value: JSON.stringify(key) },
        ],
      });
      this.opts.log.info({ host: rec.data.host }, 'moved certificate key to cert-keys/');
    }
  }

  /** Rebuilds the TLS context of `host` once its certificate and the key made for it are both present. */
  private refreshContext(host: string): void {
    const rec = this.certs.get(keys.cert(host));
    if (!rec) {
      this.contexts.delete(host);
      return;
    }
    const key = this.certKeys.get(keys.certKey(host));
    // The other half of a new pair is still on its way: keep serving the previous pair meanwhile.
    if (!key || key.certSha256 !== sha256(rec.certPem)) return;
    try {
      this.contexts.set(host, createSecureContext({ cert: rec.certPem, key: key.keyPem }));
    } catch (err) {
      this.opts.log.warn({ host, err: (err as Error).message }, 'unusable certificate or key in the registry');
    }
  }

  /** The certificate to present for `servername`, if the network has one. Never triggers issuance. */
  sniContext(servername: string): SecureContext | undefined {
    return this.contexts.get(servername.toLowerCase());
  }

  hasCertificate(host: string): boolean {
    return this.contexts.has(host);
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
    for (const record of this.routes.values()) {
      const route = this.served(record);
      if (!route?.tls) continue;
      const cert = this.certs.get(keys.cert(route.host));
      if (cert && this.hasCertificate(route.host) && now < cert.renewAfter) continue;
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
      if (fresh && Date.now() < fresh.renewAfter && (await registry.get(keys.certKey(host))) !== undefined) return;
      const raw = (await registry.get(keys.route(host)))?.value;
      const record = raw === undefined ? undefined : jsonRecord(routeRecord)(raw);
      if (!record || !this.served(record)?.tls) return; // unexposed meanwhile (or never granted): no order
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
        notBefore,
        notAfter,
        renewAfter: notBefore + Math.floor(((notAfter - notBefore) * 2) / 3),
        issuer: this.opts.issuer.kind,
        issuedAt: Date.now(),
      };
      const key: CertKeyRecord = { host, keyPem: issued.keyPem, certSha256: sha256(issued.certPem) };
      // One transaction: no reader ever sees a certificate whose key is missing from the registry.
      await registry.txn({
        compare: [],
        success: [
          { type: 'put', key: keys.cert(host), value: JSON.stringify(rec) },
          { type: 'put', key: keys.certKey(host), value: JSON.stringify(key) },
        ],
      });
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
    for (const m of [this.certs, this.certKeys, this.routes, this.http01, this.alpn]) m.close();
    await this.lease?.revoke().catch(() => {});
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
