// A Caddy-like internal certificate authority for `allegra devnet`: a long-lived root kept on disk that signs
// short-lived leaf certificates locally, so TLS works on a laptop without any ACME server.
import { createPrivateKey, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { chmod, link, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import * as x509 from '@peculiar/x509';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto);

const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALG = { name: 'ECDSA', hash: 'SHA-256' } as const;
const ROOT_KEY_FILE = 'root.key';
const ROOT_CERT_FILE = 'root.crt';
const ROOT_VALIDITY_DAYS = 3650;
const DAY_MS = 86_400_000;
/** Certificates start up to a minute in the past so that a client whose clock lags a little accepts them. */
const BACKDATE_MS = 60_000;

export interface IssuedCert {
  /** The leaf certificate only (it is signed directly by the root, so no intermediate is needed). */
  certPem: string;
  /**
   * What a server sends: the leaf, then the root that signed it. The root is a trust anchor clients must
   * already hold, but sending it completes the chain for tools that check the served chain (testssl's
   * "chain incomplete") and for clients that match the anchor by what the server sends.
   */
  chainPem: string;
  /** The leaf's ECDSA P-256 private key, PKCS#8 PEM. */
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
}

export class LocalCa {
  readonly rootCertPem: string;
  readonly rootCertPath: string;
  readonly #rootCert: x509.X509Certificate;
  readonly #rootKey: CryptoKey;

  private constructor(rootCert: x509.X509Certificate, rootKey: CryptoKey, rootCertPath: string) {
    this.#rootCert = rootCert;
    this.#rootKey = rootKey;
    this.rootCertPem = rootCert.toString('pem');
    this.rootCertPath = rootCertPath;
  }

  /**
   * Loads the root key and certificate from `dir` (`root.key`, mode 0600, and `root.crt`), creating them when
   * neither exists. Concurrent callers on the same directory end up with the same root.
   */
  static async loadOrCreate(dir: string): Promise<LocalCa> {
    const abs = resolve(dir);
    await mkdir(abs, { recursive: true, mode: 0o700 });
    const keyPath = join(abs, ROOT_KEY_FILE);
    const certPath = join(abs, ROOT_CERT_FILE);

    if (!(await exists(keyPath))) {
      if (await exists(certPath)) {
        throw new Error(`local CA: ${certPath} exists but ${keyPath} is missing; remove ${certPath} to create a new root`);
      }
      const created = await LocalCa.#createRoot(abs, keyPath, certPath);
      if (created) return created;
      // Another process created the key first; fall through and load what it writes.
    }
    return LocalCa.#load(keyPath, certPath);
  }

  static async #createRoot(dir: string, keyPath: string, certPath: string): Promise<LocalCa | undefined> {
    const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: [{ CN: ['Allegra Local CA Root'] }, { O: ['Allegra devnet'] }],
      notBefore: wholeSeconds(new Date(now - BACKDATE_MS)),
      notAfter: wholeSeconds(new Date(now + ROOT_VALIDITY_DAYS * DAY_MS)),
      signingAlgorithm: SIGNING_ALG,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const keyPem = await exportPkcs8(keys.privateKey);

    // The key is published with link(), which fails atomically when another process got there first.
    const suffix = `${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const keyTmp = join(dir, `${ROOT_KEY_FILE}.${suffix}`);
    const certTmp = join(dir, `${ROOT_CERT_FILE}.${suffix}`);
    try {
      await writeFile(keyTmp, keyPem, { mode: 0o600, flag: 'wx' });
      await chmod(keyTmp, 0o600); // in case the umask removed bits we asked for (it cannot add any)
      try {
        await link(keyTmp, keyPath);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
        throw err;
      }
      await writeFile(certTmp, cert.toString('pem'), { mode: 0o644 });
      await rename(certTmp, certPath);
    } finally {
      await rm(keyTmp, { force: true });
      await rm(certTmp, { force: true });
    }
    return new LocalCa(cert, keys.privateKey, certPath);
  }

  static async #load(keyPath: string, certPath: string): Promise<LocalCa> {
    // A concurrent creator publishes the key a moment before the certificate.
    let certPem: string | undefined;
    for (let i = 0; i < 100 && certPem === undefined; i++) {
      try {
        certPem = await readFile(certPath, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    if (certPem === undefined) {
      throw new Error(`local CA: ${keyPath} exists but ${certPath} is missing; remove ${keyPath} to create a new root`);
    }
    const keyPem = await readFile(keyPath, 'utf8');
    const cert = new x509.X509Certificate(certPem);

    // The key must belong to the certificate, or every leaf would fail verification far away from the cause.
    const spkiFromKey = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
    if (!Buffer.from(cert.publicKey.rawData).equals(spkiFromKey)) {
      throw new Error(`local CA: ${keyPath} does not match ${certPath}`);
    }
    if (cert.notAfter.getTime() <= Date.now()) {
      throw new Error(`local CA: root ${certPath} expired on ${cert.notAfter.toISOString()}; remove both files`);
    }
    const rootKey = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(keyPem), EC_ALG, false, ['sign']);
    return new LocalCa(cert, rootKey, certPath);
  }

  /**
   * Issues a leaf certificate for `hosts` (DNS names, wildcards such as `*.demo.localhost`, or IP addresses), signed
   * by the root, with an ECDSA P-256 key, valid for `days` (default 7; fractions allowed).
   *
   * With `notBefore`, the certificate is valid from `notBefore` until `notBefore + days`. Without it, it is valid
   * until `days` from now and starts slightly in the past (a minute, or a tenth of the lifetime if that is shorter)
   * so that clients whose clock lags a little accept it. Dates have whole-second precision and never pass the
   * root's own expiry.
   *
   * A wildcard directly under a single label (`*.localhost`) is encoded as asked, but TLS clients (Node, curl,
   * browsers) refuse to match such wildcards: issue `*.<name>.localhost` or the exact host names instead.
   */
  async issue(hosts: string[], opts: { days?: number; notBefore?: Date } = {}): Promise<IssuedCert> {
    const names = normaliseHosts(hosts);
    const days = opts.days ?? 7;
    if (!Number.isFinite(days) || days <= 0) throw new Error(`local CA: days must be a positive number, got ${days}`);
    const lifetimeMs = days * DAY_MS;
    let notBefore: Date;
    let wanted: Date;
    if (opts.notBefore) {
      if (Number.isNaN(opts.notBefore.getTime())) throw new Error('local CA: notBefore is not a valid date');
      notBefore = wholeSeconds(opts.notBefore);
      wanted = new Date(notBefore.getTime() + lifetimeMs);
    } else {
      const now = Date.now();
      notBefore = wholeSeconds(new Date(now - Math.min(BACKDATE_MS, lifetimeMs / 10)));
      wanted = new Date(Math.ceil((now + lifetimeMs) / 1000) * 1000);
    }
    const notAfter = wholeSeconds(wanted > this.#rootCert.notAfter ? this.#rootCert.notAfter : wanted);

    const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    const firstDns = names.find((n) => n.type === 'dns' && n.value.length <= 64);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: firstDns ? [{ CN: [firstDns.value] }] : [{ O: ['Allegra devnet'] }],
      issuer: this.#rootCert.subjectName,
      notBefore,
      notAfter,
      signingAlgorithm: SIGNING_ALG,
      publicKey: keys.publicKey,
      signingKey: this.#rootKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(names),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.#rootCert.publicKey),
      ],
    });
    const certPem = cert.toString('pem');
    return {
      certPem,
      chainPem: `${certPem}\n${this.rootCertPem}\n`,
      keyPem: await exportPkcs8(keys.privateKey),
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
    };
  }

  /** One line telling the user how to make clients trust the root. */
  trustHint(): string {
    const p = this.rootCertPath;
    return (
      `Trust the Allegra local CA: curl --cacert ${p} …, NODE_EXTRA_CA_CERTS=${p}, or system-wide ` +
      `sudo cp ${p} /usr/local/share/ca-certificates/allegra-local-ca.crt && sudo update-ca-certificates`
    );
  }
}

function normaliseHosts(hosts: string[]): x509.JsonGeneralName[] {
  if (hosts.length === 0) throw new Error('local CA: at least one host is required');
  const seen = new Set<string>();
  const out: x509.JsonGeneralName[] = [];
  for (const raw of hosts) {
    const host = raw.trim().toLowerCase().replace(/\.$/, '');
    const ip = host.replace(/^\[(.*)\]$/, '$1');
    if (isIP(ip)) {
      if (!seen.has(ip)) out.push({ type: 'ip', value: ip });
      seen.add(ip);
      continue;
    }
    // Letters, digits, hyphens and underscores per label; an optional leading `*.` wildcard label.
    if (!/^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/.test(host)) {
      throw new Error(`local CA: not a valid host name or IP address: ${JSON.stringify(raw)}`);
    }
    if (host.length > 253) throw new Error(`local CA: host name too long: ${raw}`);
    if (!seen.has(host)) out.push({ type: 'dns', value: host });
    seen.add(host);
  }
  return out;
}

/** 128 random bits, positive (high bit clear) and with a non-zero leading byte, as DER INTEGER wants. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString('hex');
}

function wholeSeconds(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}

async function exportPkcs8(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return `${x509.PemConverter.encode(der, 'PRIVATE KEY')}\n`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
